// libbrotli for ALBHTTP's BrotliEncoder. The allocator callbacks count every byte an encoder holds
// (the per-stream memory figure in docs/decisions.md). The decoder is linked for the tests' round trips.
#ifndef ALB_CBROTLI_SHIM_H
#define ALB_CBROTLI_SHIM_H

#include <stdlib.h>
#include <brotli/encode.h>
#include <brotli/decode.h>

/// Bytes an encoder holds now and at most, kept by the allocator callbacks.
typedef struct {
    size_t current;
    size_t peak;
} alb_brotli_meter;

/// Each block carries its size in a 16-byte header (keeps the 16-byte alignment malloc gives).
static inline void *alb_brotli_alloc(void *opaque, size_t size) {
    unsigned char *block = (unsigned char *)malloc(size + 16);
    if (block == NULL) return NULL;
    *(size_t *)block = size;
    alb_brotli_meter *meter = (alb_brotli_meter *)opaque;
    meter->current += size;
    if (meter->current > meter->peak) meter->peak = meter->current;
    return block + 16;
}

static inline void alb_brotli_free(void *opaque, void *address) {
    if (address == NULL) return;
    unsigned char *block = (unsigned char *)address - 16;
    ((alb_brotli_meter *)opaque)->current -= *(size_t *)block;
    free(block);
}

static inline BrotliEncoderState *alb_brotli_encoder_create(alb_brotli_meter *meter) {
    return BrotliEncoderCreateInstance(alb_brotli_alloc, alb_brotli_free, meter);
}

#endif
