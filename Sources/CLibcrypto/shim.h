// OpenSSL's libcrypto (Debian libssl-dev for the headers, libssl3 at run time) for ALBOpenSSL's RSA private
// keys: only that module imports this. BoringSSL, which swift-nio-ssl vendors with every symbol prefixed,
// runs the TLS.
//
// The library is not linked but opened when the first RSA key is read (`alb_libcrypto_open`): loading it
// relocates about 400 KB of its tables into private memory of the process, which a process without RSA keys
// need not carry, and a host without libssl3 still runs (RSA keys then stay in BoringSSL). Each function is
// typed from the header by `__typeof__`, so the compiler checks every call as if it were linked.
#ifndef ALB_CLIBCRYPTO_SHIM_H
#define ALB_CLIBCRYPTO_SHIM_H

#include <dlfcn.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#define ALB_LIBCRYPTO_FUNCTIONS(X) \
    X(BIO_new_mem_buf) X(BIO_free) X(PEM_read_bio_PrivateKey) X(ERR_clear_error) \
    X(EVP_PKEY_get_base_id) X(EVP_PKEY_get_size) X(EVP_PKEY_free) \
    X(EVP_MD_CTX_new) X(EVP_MD_CTX_free) X(EVP_DigestSignInit) X(EVP_DigestSign) \
    X(EVP_PKEY_CTX_new) X(EVP_PKEY_CTX_free) X(EVP_PKEY_CTX_set_rsa_padding) \
    X(EVP_PKEY_CTX_set_rsa_pss_saltlen) X(EVP_PKEY_CTX_set_rsa_mgf1_md) \
    X(EVP_PKEY_decrypt_init) X(EVP_PKEY_decrypt) \
    X(EVP_sha1) X(EVP_sha256) X(EVP_sha384) X(EVP_sha512) X(EVP_md5_sha1)

/// libcrypto's functions, all set once `alb_libcrypto_open` has returned 1.
typedef struct {
#define ALB_LIBCRYPTO_FIELD(name) __typeof__(&name) name;
    ALB_LIBCRYPTO_FUNCTIONS(ALB_LIBCRYPTO_FIELD)
#undef ALB_LIBCRYPTO_FIELD
} alb_libcrypto;

/// Opens libcrypto.so.3 and fills `functions`: 1 when every function was found, 0 otherwise (nothing to
/// close then: a library that lacks one is left loaded, unused, as dlopen'd libraries usually are).
static inline int alb_libcrypto_open(alb_libcrypto *functions) {
    void *library = dlopen("libcrypto.so.3", RTLD_NOW | RTLD_LOCAL);
    if (library == NULL) return 0;
#define ALB_LIBCRYPTO_LOOKUP(name) \
    functions->name = (__typeof__(&name))dlsym(library, #name); \
    if (functions->name == NULL) return 0;
    ALB_LIBCRYPTO_FUNCTIONS(ALB_LIBCRYPTO_LOOKUP)
#undef ALB_LIBCRYPTO_LOOKUP
    return 1;
}

/// A PEM pass phrase callback that has none: an encrypted key fails to load instead of OpenSSL asking for a
/// pass phrase on the terminal.
static inline int alb_no_passphrase(char *buffer, int size, int writing, void *context) {
    (void)buffer; (void)size; (void)writing; (void)context;
    return 0;
}

#endif
