/* The A1111 name table. Only samplers with a scheduler here behind them are listed: a client
 * asking for one this engine lacks ("DPM2", "DPM++ SDE") gets a 400 naming it rather than a
 * silently different image. */
#include "samplers.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "../include/sd.h"

static const srv_sampler samplers[] = {
    {"Euler a", "euler_a", NULL},
    {"Euler", "euler", "euler_karras"},
    {"LMS", "lms", "lms_karras"},
    {"Heun", "heun", NULL},
    {"DPM++ 2M", "dpm++2m", "dpm++2m_karras"},
    {"DPM++ 2M SDE", "dpm++2m_sde", "dpm++2m_sde_karras"},
    {"DDIM", "ddim", NULL},
    {"PLMS", "pndm", NULL},
    {"PNDM", "pndm", NULL},
    {"UniPC", "unipc", NULL},
    {"LCM", "lcm", NULL},
    {"DDPM", "ddpm", NULL},
    {"Euler flow", "flow_euler", NULL},
};
#define N_SAMPLERS ((int)(sizeof samplers / sizeof samplers[0]))

static const char *const schedules[][2] = {{"automatic", "Automatic"}, {"karras", "Karras"}};

int srv_sampler_count(void) {
    return N_SAMPLERS;
}
const srv_sampler *srv_sampler_get(int i) {
    return i >= 0 && i < N_SAMPLERS ? &samplers[i] : NULL;
}
int srv_schedule_count(void) {
    return 2;
}
const char *srv_schedule_get(int i, const char **label) {
    if (i < 0 || i >= 2) return NULL;
    if (label) *label = schedules[i][1];
    return schedules[i][0];
}

static bool is_karras(const char *schedule) {
    return !strcasecmp(schedule, "Karras");
}

bool srv_sampler_map(const char *sampler, const char *schedule, const char **alias, char *err,
                     size_t err_size) {
    *alias = NULL;
    if (schedule && (!*schedule || !strcasecmp(schedule, "Automatic"))) schedule = NULL;
    if (schedule && !is_karras(schedule)) {
        snprintf(err, err_size, "unknown scheduler '%.60s' (known: Automatic, Karras)", schedule);
        return false;
    }
    if (!sampler || !*sampler) {
        if (!schedule) return true;
        snprintf(err, err_size, "scheduler '%s' needs a sampler_name", schedule);
        return false;
    }
    /* "DPM++ 2M Karras": the schedule glued to the name, as A1111 before 1.9 spelled it. */
    char name[96];
    snprintf(name, sizeof name, "%s", sampler);
    size_t n = strlen(name);
    if (n > 7 && !strcasecmp(name + n - 7, " Karras")) {
        name[n - 7] = 0;
        schedule = "Karras";
    }
    for (int i = 0; i < N_SAMPLERS; i++) {
        if (strcasecmp(samplers[i].name, name)) continue;
        if (!schedule) {
            *alias = samplers[i].alias;
            return true;
        }
        if (samplers[i].karras) {
            *alias = samplers[i].karras;
            return true;
        }
        snprintf(err, err_size, "sampler '%s' has no Karras schedule here", samplers[i].name);
        return false;
    }
    /* This engine's own names (gen --scheduler): a class name or alias, schedule unset. */
    if (!schedule && strlen(sampler) < sizeof name && sd_scheduler_check(sampler, NULL) == SD_OK) {
        for (int i = 0; i < sd_scheduler_count(); i++)
            if (!strcmp(sd_scheduler_get(i)->class_name, sampler)) {
                *alias = sd_scheduler_get(i)->class_name;
                return true;
            }
        for (int i = 0; i < N_SAMPLERS; i++)
            if (!strcasecmp(samplers[i].alias, sampler) ||
                (samplers[i].karras && !strcasecmp(samplers[i].karras, sampler))) {
                *alias =
                    strcasecmp(samplers[i].alias, sampler) ? samplers[i].karras : samplers[i].alias;
                return true;
            }
    }
    snprintf(err, err_size, "unknown sampler '%.60s' (GET /sdapi/v1/samplers lists them)", sampler);
    return false;
}
