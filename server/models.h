/* The models a client may pick and the resident pipelines.
 *
 * --models DIR: every diffusers folder (model_index.json inside) and every .safetensors file
 * directly in DIR is a model, named by its entry name. Without --models, --model PATH is the one
 * model, named by its last path component. Names resolve only inside DIR: a name with '/' or
 * starting with '.' is refused, and so is an entry whose real path (symbolic links followed)
 * leaves DIR.
 *
 * Up to --max-models pipelines stay loaded; loading one more frees the least recently used. Only
 * the job worker loads, generates and frees (srv_models_acquire), so pipelines need no lock; the
 * current default model is shared with the HTTP threads and is behind a mutex. */
#ifndef SRV_MODELS_H
#define SRV_MODELS_H

#include <stdbool.h>

#include "../include/sd.h"
#include "config.h"
#include "request.h"

typedef struct srv_models srv_models;

bool srv_models_open(srv_models **out, const srv_config *cfg, char *err, size_t err_size);
void srv_models_close(srv_models *m);

/* Whether `name` may name an entry of the models folder (no '/', no leading '.', not empty). */
bool srv_model_name_ok(const char *name);

/* The sorted model names (*names malloc'd, each name malloc'd: srv_models_list_free). */
int srv_models_list(srv_models *m, char ***names);
void srv_models_list_free(char **names, int n);

/* The model's path (malloc'd). 400 for a name that could leave the folder, 404 for none such. */
bool srv_models_resolve(srv_models *m, const char *name, char **path, srv_error *e);

/* The default model's name (malloc'd) and changing it (POST /sdapi/v1/options). */
char *srv_models_current(srv_models *m);
bool srv_models_set_current(srv_models *m, const char *name, srv_error *e);

/* Worker thread only: the resident pipeline of `name` with these LoRAs merged, loading it (and
 * freeing the least recently used one) when needed. *loaded_s: seconds spent loading (0 when it
 * was resident). */
sd_pipeline *srv_models_acquire(srv_models *m, const char *name, const sd_lora *loras, int n_loras,
                                double *loaded_s, srv_error *e);

#endif
