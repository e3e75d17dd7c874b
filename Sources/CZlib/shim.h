// zlib for ALBHTTP's GzipEncoder. `deflateInit2` is a macro Swift cannot import, and the allocator
// callbacks below count every byte zlib holds (the per-stream memory figure in docs/decisions.md).
#ifndef ALB_CZLIB_SHIM_H
#define ALB_CZLIB_SHIM_H

#include <stdlib.h>
#include <zlib.h>

/// Bytes a compressor holds now and at most, kept by the allocator callbacks.
typedef struct {
    size_t current;
    size_t peak;
} alb_zlib_meter;

/// Each block carries its size in a 16-byte header (keeps the 16-byte alignment malloc gives).
static inline voidpf alb_zlib_alloc(voidpf opaque, uInt items, uInt size) {
    size_t bytes = (size_t)items * (size_t)size;
    unsigned char *block = (unsigned char *)malloc(bytes + 16);
    if (block == NULL) return Z_NULL;
    *(size_t *)block = bytes;
    alb_zlib_meter *meter = (alb_zlib_meter *)opaque;
    meter->current += bytes;
    if (meter->current > meter->peak) meter->peak = meter->current;
    return block + 16;
}

static inline void alb_zlib_free(voidpf opaque, voidpf address) {
    if (address == Z_NULL) return;
    unsigned char *block = (unsigned char *)address - 16;
    ((alb_zlib_meter *)opaque)->current -= *(size_t *)block;
    free(block);
}

/// A gzip (RFC 1952) deflate stream: `windowBits` 9-15 (16 is added here for the gzip wrapper).
static inline int alb_deflate_init_gzip(z_stream *stream, int level, int windowBits, int memLevel,
                                        alb_zlib_meter *meter) {
    stream->zalloc = alb_zlib_alloc;
    stream->zfree = alb_zlib_free;
    stream->opaque = meter;
    stream->next_in = Z_NULL;
    stream->avail_in = 0;
    return deflateInit2(stream, level, Z_DEFLATED, windowBits + 16, memLevel, Z_DEFAULT_STRATEGY);
}

/// For tests: an inflate stream that reads gzip (windowBits 15 + 16).
static inline int alb_inflate_init_gzip(z_stream *stream) {
    stream->zalloc = Z_NULL;
    stream->zfree = Z_NULL;
    stream->opaque = Z_NULL;
    stream->next_in = Z_NULL;
    stream->avail_in = 0;
    return inflateInit2(stream, 15 + 16);
}

#endif
