/* Images kept in memory for OpenAI's response_format "url": GET /v1/files/<id>.<png|jpeg> serves
 * them. The newest --max-files stay; older ones are dropped (404). Ids are 128 random bits, so
 * one client cannot guess another's images. */
#ifndef SRV_FILES_H
#define SRV_FILES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct srv_files srv_files;

srv_files *srv_files_new(int max_files);
void srv_files_free(srv_files *f);
/* Stores a copy of data; *id receives "<32 hex>.<ext>" (buffer of 48). */
bool srv_files_put(srv_files *f, const uint8_t *data, size_t len, const char *ext, char *id);
/* A malloc'd copy of the file named id, or false. */
bool srv_files_get(srv_files *f, const char *id, uint8_t **data, size_t *len);

#endif
