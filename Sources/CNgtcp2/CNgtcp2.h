#ifndef ALB_CNGTCP2_H
#define ALB_CNGTCP2_H

/*
 * ngtcp2 0.12.1 as Debian 12 ships it. Its public API names versioned functions through function-like
 * macros that pass the struct versions this header was built with (NGTCP2_*_VERSION); Swift imports no
 * function-like macro, so each one ALBQUIC calls has a static inline twin here, named with an `alb_` prefix,
 * taking the same arguments as the macro. Follow these headers, not the 1.x documentation: 1.x renamed or
 * removed several of these (ngtcp2_conn_server_new takes other struct versions, ngtcp2_pkt_info changed).
 */

#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <ngtcp2/ngtcp2_crypto_gnutls.h>
#include <gnutls/gnutls.h>
#include <gnutls/crypto.h>

static inline void alb_ngtcp2_settings_default(ngtcp2_settings *settings) {
    ngtcp2_settings_default(settings);
}

static inline void alb_ngtcp2_transport_params_default(ngtcp2_transport_params *params) {
    ngtcp2_transport_params_default(params);
}

static inline int alb_ngtcp2_conn_server_new(ngtcp2_conn **pconn, const ngtcp2_cid *dcid,
                                             const ngtcp2_cid *scid, const ngtcp2_path *path,
                                             uint32_t client_chosen_version,
                                             const ngtcp2_callbacks *callbacks,
                                             const ngtcp2_settings *settings,
                                             const ngtcp2_transport_params *params,
                                             const ngtcp2_mem *mem, void *user_data) {
    return ngtcp2_conn_server_new(pconn, dcid, scid, path, client_chosen_version, callbacks, settings,
                                  params, mem, user_data);
}

static inline int alb_ngtcp2_conn_read_pkt(ngtcp2_conn *conn, const ngtcp2_path *path,
                                           const ngtcp2_pkt_info *pi, const uint8_t *pkt, size_t pktlen,
                                           ngtcp2_tstamp ts) {
    return ngtcp2_conn_read_pkt(conn, path, pi, pkt, pktlen, ts);
}

static inline ngtcp2_ssize alb_ngtcp2_conn_write_pkt(ngtcp2_conn *conn, ngtcp2_path *path, ngtcp2_pkt_info *pi,
                                                     uint8_t *dest, size_t destlen, ngtcp2_tstamp ts) {
    return ngtcp2_conn_write_pkt(conn, path, pi, dest, destlen, ts);
}

static inline ngtcp2_ssize alb_ngtcp2_conn_writev_stream(ngtcp2_conn *conn, ngtcp2_path *path,
                                                         ngtcp2_pkt_info *pi, uint8_t *dest, size_t destlen,
                                                         ngtcp2_ssize *pdatalen, uint32_t flags,
                                                         int64_t stream_id, const ngtcp2_vec *datav,
                                                         size_t datavcnt, ngtcp2_tstamp ts) {
    return ngtcp2_conn_writev_stream(conn, path, pi, dest, destlen, pdatalen, flags, stream_id, datav,
                                     datavcnt, ts);
}

static inline ngtcp2_ssize alb_ngtcp2_conn_write_connection_close(ngtcp2_conn *conn, ngtcp2_path *path,
                                                                  ngtcp2_pkt_info *pi, uint8_t *dest,
                                                                  size_t destlen,
                                                                  const ngtcp2_connection_close_error *ccerr,
                                                                  ngtcp2_tstamp ts) {
    return ngtcp2_conn_write_connection_close(conn, path, pi, dest, destlen, ccerr, ts);
}

static inline void alb_ngtcp2_conn_get_conn_stat(ngtcp2_conn *conn, ngtcp2_conn_stat *cstat) {
    ngtcp2_conn_get_conn_stat(conn, cstat);
}

static inline int alb_ngtcp2_conn_set_local_transport_params(ngtcp2_conn *conn,
                                                             const ngtcp2_transport_params *params) {
    return ngtcp2_conn_set_local_transport_params(conn, params);
}

#endif /* ALB_CNGTCP2_H */
