/* Scheduler construction the way diffusers' `CLASS.from_config(config, **overrides)` does it, and
 * the public calls, which dispatch to the class's vtable.
 *
 * from_config keeps the config keys that the class's __init__ accepts, takes the class defaults
 * for the others, and registers everything else of the original config as hidden entries: so
 * building DDIMScheduler from a PNDM config yields DDIM's default clip_sample = true while
 * scheduler.config still shows PNDM's skip_prk_steps. Keys listed in the config's
 * `_use_default_values` were defaults of the class that saved it, so they are dropped and take
 * this class's defaults instead. The resolved config is kept as a cJSON object, which the class
 * reads and the caller can inspect (sched_config). */
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "sched_internal.h"

extern const sched_class sched_ddim, sched_pndm, sched_euler, sched_euler_ancestral,
    sched_dpm_multistep, sched_lcm, sched_heun, sched_lms, sched_unipc, sched_ddpm,
    sched_flow_euler;

static const sched_class *const classes[] = {
    &sched_ddim,          &sched_pndm, &sched_euler,      &sched_euler_ancestral,
    &sched_dpm_multistep, &sched_lcm,  &sched_heun,       &sched_lms,
    &sched_unipc,         &sched_ddpm, &sched_flow_euler,
};
#define N_CLASSES ((int)(sizeof classes / sizeof classes[0]))

/* Short names; some also set options (applied before the caller's overrides). */
static const struct {
    const char *alias;
    const sched_class *cls;
    const char *overrides; /* JSON object text or NULL */
} aliases[] = {
    {"ddim", &sched_ddim, NULL},
    {"pndm", &sched_pndm, NULL},
    {"plms", &sched_pndm, NULL},
    {"euler", &sched_euler, NULL},
    {"euler_karras", &sched_euler, "{\"use_karras_sigmas\": true}"},
    {"euler_a", &sched_euler_ancestral, NULL},
    {"dpm++2m", &sched_dpm_multistep, NULL},
    {"dpm++2m_karras", &sched_dpm_multistep, "{\"use_karras_sigmas\": true}"},
    {"dpm++2m_sde", &sched_dpm_multistep, "{\"algorithm_type\": \"sde-dpmsolver++\"}"},
    {"dpm++2m_sde_karras", &sched_dpm_multistep,
     "{\"algorithm_type\": \"sde-dpmsolver++\", \"use_karras_sigmas\": true}"},
    {"lcm", &sched_lcm, NULL},
    {"heun", &sched_heun, NULL},
    {"lms", &sched_lms, NULL},
    {"lms_karras", &sched_lms, "{\"use_karras_sigmas\": true}"},
    {"unipc", &sched_unipc, NULL},
    {"ddpm", &sched_ddpm, NULL},
    {"flow_euler", &sched_flow_euler, NULL},
};
#define N_ALIASES ((int)(sizeof aliases / sizeof aliases[0]))

/* Filled once: the list may be asked for from several threads (sd_scheduler_get), and the class
 * fields are not constant expressions a static initialiser could take. */
static sched_info info[N_CLASSES];
static pthread_once_t info_once = PTHREAD_ONCE_INIT;

static void fill_info(void) {
    for (int i = 0; i < N_CLASSES; i++) {
        info[i].class_name = classes[i]->name;
        info[i].aliases = classes[i]->aliases;
        info[i].description = classes[i]->description;
    }
}

int sched_list(const sched_info **out) {
    pthread_once(&info_once, fill_info);
    *out = info;
    return N_CLASSES;
}

static const sched_class *find_class(const char *name, const char **alias_overrides) {
    *alias_overrides = NULL;
    for (int i = 0; i < N_CLASSES; i++)
        if (!strcmp(classes[i]->name, name)) return classes[i];
    for (int i = 0; i < N_ALIASES; i++)
        if (!strcasecmp(aliases[i].alias, name)) {
            *alias_overrides = aliases[i].overrides;
            return aliases[i].cls;
        }
    return NULL;
}

/* ---- config resolution ----------------------------------------------------------------------- */

static bool in_choices(const char *value, const char *choices) {
    size_t len = strlen(value);
    for (const char *p = choices; *p;) {
        const char *bar = strchr(p, '|');
        size_t n = bar ? (size_t)(bar - p) : strlen(p);
        if (n == len && !strncmp(p, value, n)) return true;
        p += n + (bar != NULL);
    }
    return false;
}

/* The value `v` given for parameter `p` in its normalised form (NULL v: the default), or NULL
 * when it has the wrong type or an unknown value; *why then says which. */
static cJSON *param_value(const sched_param *p, const cJSON *v, const char **why) {
    bool null = !v || cJSON_IsNull(v);
    static const char *const want[] = {"an integer", "a number",         "true or false",
                                       "a string",   "a number or null", "a string or null",
                                       "JSON"};
    *why = want[p->type];
    switch (p->type) {
    case SP_INT:
        if (null) return cJSON_CreateNumber(p->def);
        if (cJSON_IsNumber(v) && v->valuedouble == floor(v->valuedouble) &&
            fabs(v->valuedouble) < 1e15)
            return cJSON_CreateNumber(v->valuedouble);
        break;
    case SP_NUM:
        if (null) return cJSON_CreateNumber(p->def);
        if (cJSON_IsNumber(v)) return cJSON_CreateNumber(v->valuedouble);
        break;
    case SP_OPT_NUM:
        if (null) return cJSON_CreateNull();
        if (cJSON_IsNumber(v)) return cJSON_CreateNumber(v->valuedouble);
        break;
    case SP_BOOL:
        if (null) return cJSON_CreateBool(p->def != 0);
        if (cJSON_IsBool(v)) return cJSON_CreateBool(cJSON_IsTrue(v));
        if (cJSON_IsNumber(v)) return cJSON_CreateBool(v->valuedouble != 0);
        break;
    case SP_STR:
    case SP_OPT_STR:
        if (null) return p->type == SP_STR ? cJSON_CreateString(p->def_str) : cJSON_CreateNull();
        if (cJSON_IsString(v)) {
            if (!p->choices || in_choices(v->valuestring, p->choices))
                return cJSON_CreateString(v->valuestring);
            *why = "one of";
            return NULL;
        }
        break;
    case SP_JSON:
        if (null) return cJSON_Parse(p->def_str);
        return cJSON_Duplicate(v, 1);
    }
    return NULL;
}

static const sched_param *find_param(const sched_class *cls, const char *key) {
    for (const sched_param *p = cls->params; p->key; p++)
        if (!strcmp(p->key, key)) return p;
    return NULL;
}

static bool listed(const cJSON *array, const char *key) {
    for (const cJSON *e = array ? array->child : NULL; e; e = e->next)
        if (cJSON_IsString(e) && !strcmp(e->valuestring, key)) return true;
    return false;
}

/* Builds the resolved config: hidden keys of `config`, then every class parameter from
 * `overrides`, `alias_over`, `config` or the default, in that order of precedence. */
static sd_status resolve_config(const sched_class *cls, const cJSON *config,
                                const cJSON *alias_over, const cJSON *overrides, cJSON **out) {
    cJSON *eff = cJSON_CreateObject();
    if (!eff) return sd_set_error(SD_ERR_NOMEM, "%s: out of memory", cls->name);
    const cJSON *used_defaults = config ? cJSON_GetObjectItem(config, "_use_default_values") : NULL;
    for (const cJSON *e = config ? config->child : NULL; e; e = e->next) {
        if (!e->string || !strcmp(e->string, "_use_default_values") ||
            listed(used_defaults, e->string))
            continue;
        cJSON_AddItemToObject(eff, e->string, cJSON_Duplicate(e, 1));
    }
    for (const cJSON *e = overrides ? overrides->child : NULL; e; e = e->next)
        if (e->string && !find_param(cls, e->string)) {
            cJSON_Delete(eff);
            return sd_set_error(SD_ERR_ARG, "%s has no option '%s'", cls->name, e->string);
        }
    cJSON *defaults_used = cJSON_CreateArray();
    for (const sched_param *p = cls->params; p->key; p++) {
        const cJSON *v = NULL;
        const char *source = "the scheduler config";
        sd_status bad = SD_ERR_CONFIG;
        if (overrides && (v = cJSON_GetObjectItem(overrides, p->key))) {
            source = "the scheduler options", bad = SD_ERR_ARG;
        } else if (alias_over && (v = cJSON_GetObjectItem(alias_over, p->key))) {
            source = "the scheduler alias", bad = SD_ERR_ARG;
        } else {
            v = cJSON_GetObjectItem(eff, p->key);
            if (!v) cJSON_AddItemToArray(defaults_used, cJSON_CreateString(p->key));
        }
        const char *why;
        cJSON *val = param_value(p, v, &why);
        if (!val) {
            /* the message is written before `eff` (which may hold v) is freed */
            sd_status st;
            if (!strcmp(why, "one of"))
                st = sd_set_error(bad, "%s: %s '%s' in %s is not supported (expected one of: %s)",
                                  cls->name, p->key, v->valuestring, source, p->choices);
            else if (p->type == SP_JSON) /* only cJSON's allocation can fail here */
                st = sd_set_error(SD_ERR_NOMEM, "%s: out of memory", cls->name);
            else
                st = sd_set_error(bad, "%s: %s in %s should be %s", cls->name, p->key, source, why);
            cJSON_Delete(defaults_used);
            cJSON_Delete(eff);
            return st;
        }
        if (cJSON_GetObjectItem(eff, p->key))
            cJSON_ReplaceItemInObject(eff, p->key, val);
        else
            cJSON_AddItemToObject(eff, p->key, val);
    }
    if (cJSON_GetArraySize(defaults_used) > 0)
        cJSON_AddItemToObject(eff, "_use_default_values", defaults_used);
    else
        cJSON_Delete(defaults_used);
    if (cJSON_GetObjectItem(eff, "_class_name"))
        cJSON_ReplaceItemInObject(eff, "_class_name", cJSON_CreateString(cls->name));
    else
        cJSON_AddItemToObject(eff, "_class_name", cJSON_CreateString(cls->name));
    *out = eff;
    return SD_OK;
}

sd_status sched_create(sd_scheduler **out, const char *class_name, const cJSON *config,
                       const cJSON *overrides) {
    *out = NULL;
    if (config && !cJSON_IsObject(config))
        return sd_set_error(SD_ERR_CONFIG, "scheduler config: expected a JSON object");
    if (overrides && !cJSON_IsObject(overrides))
        return sd_set_error(SD_ERR_ARG, "scheduler options: expected a JSON object");
    if (!class_name) {
        const cJSON *cn = config ? cJSON_GetObjectItem(config, "_class_name") : NULL;
        if (!cJSON_IsString(cn))
            return sd_set_error(SD_ERR_CONFIG, "scheduler config: no _class_name and no "
                                               "scheduler named");
        class_name = cn->valuestring;
    }
    const char *alias_text;
    const sched_class *cls = find_class(class_name, &alias_text);
    if (!cls)
        return sd_set_error(SD_ERR_ARG, "unknown scheduler '%s' (see `--scheduler help`)",
                            class_name);
    cJSON *alias_over = alias_text ? cJSON_Parse(alias_text) : NULL;
    cJSON *eff = NULL;
    sd_status st = resolve_config(cls, config, alias_over, overrides, &eff);
    cJSON_Delete(alias_over);
    if (st != SD_OK) return st;
    sd_scheduler *s = calloc(1, sizeof *s);
    if (!s) {
        cJSON_Delete(eff);
        return sd_set_error(SD_ERR_NOMEM, "%s: out of memory", cls->name);
    }
    s->cls = cls;
    s->config = eff;
    s->init_noise_sigma = 1.0;
    st = cls->init(s);
    if (st != SD_OK) {
        sched_free(s);
        return st;
    }
    *out = s;
    return SD_OK;
}

void sched_free(sd_scheduler *s) {
    if (!s) return;
    if (s->state) {
        if (s->cls->free_state)
            s->cls->free_state(s->state);
        else
            free(s->state);
    }
    free(s->alphas_cumprod);
    free(s->timesteps);
    free(s->sigmas);
    cJSON_Delete(s->config);
    free(s);
}

/* ---- resolved-config getters ----------------------------------------------------------------- */

/* Only the class's own parameters: hidden keys carried over from another class's config (a PNDM
 * config's skip_prk_steps, say) must not steer this class. */
const cJSON *sched_cfg_item(const sd_scheduler *s, const char *key) {
    return find_param(s->cls, key) ? cJSON_GetObjectItem(s->config, key) : NULL;
}

double sched_cfg_attr_num(const sd_scheduler *s, const char *key) {
    const cJSON *v = cJSON_GetObjectItem(s->config, key);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

double sched_cfg_num(const sd_scheduler *s, const char *key) {
    const cJSON *v = sched_cfg_item(s, key);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

int sched_cfg_int(const sd_scheduler *s, const char *key) {
    const cJSON *v = sched_cfg_item(s, key);
    return cJSON_IsNumber(v) ? (int)v->valuedouble : 0;
}

bool sched_cfg_bool(const sd_scheduler *s, const char *key) {
    return cJSON_IsTrue(sched_cfg_item(s, key));
}

const char *sched_cfg_str(const sd_scheduler *s, const char *key) {
    const cJSON *v = sched_cfg_item(s, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

bool sched_cfg_is(const sd_scheduler *s, const char *key, const char *value) {
    const char *v = sched_cfg_str(s, key);
    return v && !strcmp(v, value);
}

sd_status sched_cfg_error(const sd_scheduler *s, sd_status st, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return sd_set_error(st, "%s: %s", s->cls->name, msg);
}

sd_status sched_read_common(sd_scheduler *s) {
    s->num_train_timesteps = sched_cfg_int(s, "num_train_timesteps");
    if (s->num_train_timesteps < 2 || s->num_train_timesteps > 100000)
        return sched_cfg_error(s, SD_ERR_CONFIG, "num_train_timesteps %d is out of range",
                               s->num_train_timesteps);
    const char *pt = sched_cfg_str(s, "prediction_type");
    if (!pt || !strcmp(pt, "epsilon"))
        s->pred = PRED_EPSILON;
    else if (!strcmp(pt, "v_prediction"))
        s->pred = PRED_V;
    else if (!strcmp(pt, "sample") || !strcmp(pt, "original_sample"))
        s->pred = PRED_SAMPLE;
    else
        s->pred = PRED_FLOW;
    return SD_OK;
}

sched_spacing sched_cfg_spacing(const sd_scheduler *s) {
    if (sched_cfg_is(s, "timestep_spacing", "trailing")) return SPACING_TRAILING;
    if (sched_cfg_is(s, "timestep_spacing", "linspace")) return SPACING_LINSPACE;
    return SPACING_LEADING;
}

sd_status sched_plain_opts(const sd_scheduler *s, const sched_timestep_opts *opts) {
    if (opts->sigmas && opts->n_sigmas > 0)
        return sd_set_error(SD_ERR_UNSUPPORTED, "%s does not take custom sigmas", s->cls->name);
    if (opts->has_mu)
        return sd_set_error(SD_ERR_ARG, "%s takes no mu (dynamic shifting)", s->cls->name);
    return SD_OK;
}

sd_status sched_check_timestep_range(const sd_scheduler *s) {
    for (int i = 0; i < s->n_timesteps; i++)
        if (s->timesteps[i] < 0 || s->timesteps[i] >= s->num_train_timesteps)
            return sd_set_error(SD_ERR_CONFIG,
                                "%s: timestep %g (steps_offset %d, %d steps) is outside the %d "
                                "training timesteps",
                                s->cls->name, s->timesteps[i], sched_cfg_int(s, "steps_offset"),
                                s->num_inference_steps, s->num_train_timesteps);
    return SD_OK;
}

sd_status sched_alloc_timesteps(sd_scheduler *s, int n) {
    free(s->timesteps);
    s->timesteps = calloc((size_t)(n > 0 ? n : 1), sizeof *s->timesteps);
    s->n_timesteps = n;
    if (!s->timesteps) return sd_set_error(SD_ERR_NOMEM, "%s: out of memory", s->cls->name);
    return SD_OK;
}

sd_status sched_alloc_sigmas(sd_scheduler *s, int n) {
    free(s->sigmas);
    s->sigmas = calloc((size_t)(n > 0 ? n : 1), sizeof *s->sigmas);
    s->n_sigmas = n;
    if (!s->sigmas) return sd_set_error(SD_ERR_NOMEM, "%s: out of memory", s->cls->name);
    return SD_OK;
}

/* ---- public calls ---------------------------------------------------------------------------- */

sd_status sched_set_timesteps(sd_scheduler *s, int num_inference_steps,
                              const sched_timestep_opts *opts) {
    static const sched_timestep_opts none = {0};
    if (!opts) opts = &none;
    bool custom = opts->sigmas && opts->n_sigmas > 0;
    /* with custom sigmas the class derives the step count from them (and checks the argument) */
    if (!custom && (num_inference_steps <= 0 || num_inference_steps > s->num_train_timesteps))
        return sd_set_error(SD_ERR_ARG, "%s: num_inference_steps %d must be in 1..%d", s->cls->name,
                            num_inference_steps, s->num_train_timesteps);
    s->num_inference_steps = num_inference_steps;
    return s->cls->set_timesteps(s, num_inference_steps, opts);
}

const char *sched_class_name(const sd_scheduler *s) {
    return s->cls->name;
}
int sched_order(const sd_scheduler *s) {
    return s->cls->order;
}
int sched_len(const sd_scheduler *s) {
    return s->n_timesteps;
}
int sched_num_sigmas(const sd_scheduler *s) {
    return s->n_sigmas;
}
double sched_init_noise_sigma(const sd_scheduler *s) {
    return s->init_noise_sigma;
}
const cJSON *sched_config(const sd_scheduler *s) {
    return s->config;
}
void sched_set_eta(sd_scheduler *s, double eta) {
    s->eta = eta;
}

double sched_timestep(const sd_scheduler *s, int i) {
    return i >= 0 && i < s->n_timesteps ? s->timesteps[i] : NAN;
}

double sched_sigma(const sd_scheduler *s, int i) {
    return i >= 0 && i < s->n_sigmas ? s->sigmas[i] : NAN;
}

const char *sched_prediction_type(const sd_scheduler *s) {
    static const char *const names[] = {"epsilon", "v_prediction", "sample", "flow_prediction"};
    return names[s->pred];
}

void sched_scale_model_input(sd_scheduler *s, int i, const float *x, float *out, size_t n) {
    if (s->cls->scale_model_input && i >= 0 && i < s->n_timesteps) {
        s->cls->scale_model_input(s, i, x, out, n);
    } else if (out != x) {
        memmove(out, x, n * sizeof *out);
    }
}

sd_status sched_step(sd_scheduler *s, int i, const float *model_output, float *sample, size_t n,
                     sched_noise_fn noise, void *noise_ctx) {
    if (!s->timesteps)
        return sd_set_error(SD_ERR_ARG, "%s: step before set_timesteps", s->cls->name);
    if (i < 0 || i >= s->n_timesteps)
        return sd_set_error(SD_ERR_ARG, "%s: step %d outside 0..%d", s->cls->name, i,
                            s->n_timesteps - 1);
    return s->cls->step(s, i, model_output, sample, n, noise, noise_ctx);
}

void sched_add_noise(const sd_scheduler *s, int i, const float *x0, const float *noise, float *out,
                     size_t n) {
    if (i < 0 || i >= s->n_timesteps) i = s->n_timesteps - 1;
    s->cls->add_noise(s, i, x0, noise, out, n);
}

double sched_flux_mu(int image_seq_len, int base_seq, int max_seq, double base_shift,
                     double max_shift) {
    /* diffusers' calculate_shift: a line through (base_seq, base_shift), (max_seq, max_shift) */
    double m = (max_shift - base_shift) / (double)(max_seq - base_seq);
    double b = base_shift - m * base_seq;
    return image_seq_len * m + b;
}
