/* The tiled engine shared by the tiled decode (vae_tiled.c) and the tiled encode
 * (vae_encoder_tiled.c). Not part of the public API.
 *
 * Both run the part of the network away from the latent's resolution (the decoder's upsampling
 * half, the encoder's downsampling half: where the memory goes) as a list of layers, piece by
 * piece, with the group norms' statistics of the whole image, so that every pixel comes out as
 * in the untiled pass up to the order of float sums. A group norm needs the whole image's
 * activations before it, which the pieces never hold at once: its statistics are gathered in a
 * pass of their own over the pieces, each running up to that norm.
 *
 * Where those passes start is the plan: the list is cut into segments, and the activation at each
 * cut is stored whole (only the pixels each tile owns are kept, so the stored image is exact).
 * A statistics pass then reruns only its segment's layers before the norm, not everything from
 * the start. With no cut (the least memory) the passes cost about ten times one pass over SD's
 * decoder; a cut after every resnet brings that near 1.5 times, for two whole-image activations
 * held at once. vt_plan_choose cuts where the memory limit leaves room, minimising a count of
 * multiply-adds over the pieces (their margins included). */
#ifndef SD_VAE_TILED_H
#define SD_VAE_TILED_H

#include "vae_internal.h"

typedef enum {
    VT_CONV,      /* a conv (3x3 or the encoder's stride-2 downsampler) */
    VT_UPCONV,    /* nearest 2x upsampling then a 3x3 conv */
    VT_RESNET,    /* a ResnetBlock2D: norm1, norm2 */
    VT_NORM_CONV, /* group norm + SiLU then a conv written outside the region: last only */
} vt_kind;

typedef struct {
    vt_kind kind;
    const vae_resnet *res;
    const nn_conv2d *conv;
    const nn_norm *norm;
    int cin, cout;
    int s_in, s_out; /* pixels per latent pixel (along a side) of its input and output */
} vt_op;

enum { VT_MAX_OPS = 64 };

typedef struct {
    int n_ops;
    vt_op ops[VT_MAX_OPS];
    int groups; /* of every group norm */
    /* Added to every margin: 0. Tests make it -1 to show that a margin one latent pixel short
     * changes the result (the margins are tight). */
    int margin_delta;
} vt_net;

/* Segment k runs ops [cut[k], cut[k + 1]); cut[0] = 0, cut[n_seg] = n_ops. */
typedef struct {
    int n_seg;
    int cut[VT_MAX_OPS + 1];
} vt_plan;

/* Appending layers (asserting the capacity). */
void vt_add_resnet(vt_net *n, const vae_resnet *r, int s);
void vt_add_conv(vt_net *n, const nn_conv2d *c, int s_in, int s_out);
void vt_add_upconv(vt_net *n, const nn_conv2d *c, int s_in);
void vt_add_norm_conv(vt_net *n, const nn_norm *g, const nn_conv2d *c, int s);

/* How far ops [i, j) reach beyond a pixel, in whole latent pixels: the margin of context a
 * piece running them needs around its tile. */
int vt_margin(const vt_net *n, int i, int j);
/* The plan for an h x w latent in tiles of `tile` with blending band `band`: the cheapest whose
 * stored activations fit in `budget` bytes (0: none, a single segment). */
void vt_plan_choose(const vt_net *n, int h, int w, int tile, int band, size_t budget, vt_plan *p);
/* Multiply-adds of a run with that plan (the statistics passes and the margins included). */
double vt_plan_cost(const vt_net *n, const vt_plan *p, int h, int w, int tile, int band);
/* Multiply-adds of one untiled pass over the layers (what a tiled run is measured against). */
double vt_net_cost(const vt_net *n, int h, int w);

/* Memory of a run: the region its pieces take from the arena (floats; vae_take_region), its own
 * buffers (bytes), and the stored activations of the plan (bytes; 0 for a single segment). The
 * output's blend weights are counted in own_bytes; the input and output are the caller's. */
typedef struct {
    size_t region_floats, own_bytes, stored_bytes;
} vt_sizes;
vt_sizes vt_run_sizes(const vt_net *n, const vt_plan *p, int h, int w, int tile, int band);

/* Runs the layers: in [h * s0][w * s0][cin of the first op] (whole image) -> out, the pieces'
 * outputs blended linearly across a band of `band` latent pixels centred on each tile boundary.
 * The region for the pieces is taken from the model's arena and released. */
sd_status vt_run(vae *m, const vt_net *n, const vt_plan *p, int h, int w, int tile, int band,
                 const float *in, float *out, const char *what);

/* The tiled parts as layer lists: the decoder's after its first up block's resnets (ending in
 * conv_norm_out + conv_out), the encoder's down blocks that end in a downsampler (conv_in first).
 */
void vt_decoder_net(const vae *m, vt_net *n);
void vt_encoder_net(const vae *m, vt_net *n);
/* Scratch bytes of a tiled decode / encode of an h x w latent with the plan chosen under `limit`
 * (the cheapest whose total stays within it; the plan storing nothing when even that does not
 * fit); the plan and its multiply-adds through *plan and *cost when not NULL. */
size_t vt_decode_bytes(const vae *m, int h, int w, int tile, int band, size_t limit, vt_plan *plan,
                       double *cost);
size_t vt_encode_bytes(const vae *m, int h, int w, int tile, int band, size_t limit, vt_plan *plan,
                       double *cost);

#endif
