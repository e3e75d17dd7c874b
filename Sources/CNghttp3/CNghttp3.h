#ifndef ALB_CNGHTTP3_H
#define ALB_CNGHTTP3_H

/*
 * nghttp3 0.8.0 as Debian 12 ships it. The function-like macros that pass this header's struct versions
 * (NGHTTP3_*_VERSION) get static inline twins with an `alb_` prefix, since Swift imports no function-like
 * macro. Follow this header, not the 1.x documentation.
 */

#include <nghttp3/nghttp3.h>

static inline void alb_nghttp3_settings_default(nghttp3_settings *settings) {
    nghttp3_settings_default(settings);
}

static inline int alb_nghttp3_conn_server_new(nghttp3_conn **pconn, const nghttp3_callbacks *callbacks,
                                              const nghttp3_settings *settings, const nghttp3_mem *mem,
                                              void *user_data) {
    return nghttp3_conn_server_new(pconn, callbacks, settings, mem, user_data);
}

#endif /* ALB_CNGHTTP3_H */
