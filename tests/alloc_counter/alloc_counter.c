/*
 * alloc_counter.so: counts heap allocations and frees of the process it is preloaded into.
 *
 *   cc -shared -fPIC -O2 -o .build/alloc_counter.so tests/alloc_counter/alloc_counter.c   (make alloc-counter)
 *   ALB_ALLOC_COUNTER_FILE=/tmp/counts LD_PRELOAD=$PWD/.build/alloc_counter.so alb reconcile ...
 *
 * Every entry point of glibc's allocator that hands out or takes back memory is replaced by a wrapper that
 * calls glibc's own implementation (`__libc_malloc`, `__libc_memalign`, ...: exported, so no dlsym, which
 * itself allocates and would recurse) and bumps a counter with a relaxed atomic add. The counters are the
 * only shared state, so the wrappers are as thread-safe as glibc's allocator.
 *
 * What counts (the same rule as swift-nio's allocation-counter tests):
 *   allocations  every call that returns a new block: malloc, calloc, posix_memalign, aligned_alloc,
 *                memalign, valloc, pvalloc with a non-null result; realloc when it creates a block
 *                (realloc(NULL, n)) or moves one (the result differs from the argument: one allocation and
 *                one free). A realloc that grows or shrinks in place is not an allocation; it is counted in
 *                `reallocs_in_place` only.
 *   frees        free(p) with p non-null; realloc(p, 0) (glibc frees p); the old block of a moving realloc.
 *   bytes        the sizes asked for by the counted allocations (not what malloc rounded them up to).
 *
 * Where the counters live: if ALB_ALLOC_COUNTER_FILE names a file, the constructor opens (or creates) it,
 * ftruncates it to one page and maps it MAP_SHARED; from then on the counters are in that page, and another
 * process can read them at any time (tests/bench_allocs.py: Python mmap + struct). Before the mapping exists
 * (the dynamic loader and other constructors allocate first) they are in a static block, added to the page
 * once it is mapped. Layout: `struct page` below, little-endian u64 words.
 *
 * One process owns the file: the constructor claims it by swapping `owner_pid` from 0 to its pid, so a
 * child that inherits LD_PRELOAD and the variable and execs counts into its own static block instead; a
 * forked child (no exec) switches back to a private block too (pthread_atfork), so the page only ever holds
 * the counts of the process it was given to. An exec keeps the pid, so a launcher that execs the program
 * (`taskset -c 0 alb ...`) hands the page over with the counts it made so far; the harness reads
 * differences, which that does not change. The harness creates or zeroes the file before starting it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t count, size_t size);
extern void *__libc_realloc(void *pointer, size_t size);
extern void __libc_free(void *pointer);
extern void *__libc_memalign(size_t alignment, size_t size);
extern void *__libc_valloc(size_t size);
extern void *__libc_pvalloc(size_t size);

#define ALLOC_COUNTER_MAGIC 0x31434c4142 /* "BALC1" little-endian: the layout below, version 1 */

struct page {
    uint64_t magic;             /* ALLOC_COUNTER_MAGIC once the page is live */
    uint64_t owner_pid;         /* the process whose allocations these are */
    uint64_t allocations;
    uint64_t frees;
    uint64_t bytes_allocated;
    uint64_t reallocs_in_place;
};

static struct page early;                 /* counts before the mapping exists, and of processes that do not own it */
static struct page *counters = &early;    /* loaded (acquire: a plain load on x86) on every call */

static inline struct page *current(void) {
    return __atomic_load_n(&counters, __ATOMIC_ACQUIRE);
}

static inline void count_allocation(size_t size) {
    struct page *page = current();
    __atomic_fetch_add(&page->allocations, 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&page->bytes_allocated, size, __ATOMIC_RELAXED);
}

static inline void count_free(void) {
    __atomic_fetch_add(&current()->frees, 1, __ATOMIC_RELAXED);
}

void *malloc(size_t size) {
    void *result = __libc_malloc(size);
    if (result) count_allocation(size);
    return result;
}

void *calloc(size_t count, size_t size) {
    void *result = __libc_calloc(count, size);
    if (result) count_allocation(count * size);   /* glibc returned non-null, so the product did not overflow */
    return result;
}

void *realloc(void *pointer, size_t size) {
    void *result = __libc_realloc(pointer, size);
    if (pointer == NULL) {
        if (result) count_allocation(size);
    } else if (size == 0 && result == NULL) {
        count_free();                              /* glibc's realloc(p, 0) frees p */
    } else if (result == NULL) {
        /* failed: p is untouched */
    } else if (result != pointer) {
        count_allocation(size);
        count_free();
    } else {
        __atomic_fetch_add(&current()->reallocs_in_place, 1, __ATOMIC_RELAXED);
    }
    return result;
}

void *reallocarray(void *pointer, size_t count, size_t size) {
    size_t total;
    if (__builtin_mul_overflow(count, size, &total)) {
        errno = ENOMEM;
        return NULL;
    }
    return realloc(pointer, total);
}

void free(void *pointer) {
    if (pointer) count_free();
    __libc_free(pointer);
}

void *memalign(size_t alignment, size_t size) {
    void *result = __libc_memalign(alignment, size);
    if (result) count_allocation(size);
    return result;
}

void *aligned_alloc(size_t alignment, size_t size) {
    return memalign(alignment, size);              /* glibc's aligned_alloc is memalign */
}

int posix_memalign(void **out, size_t alignment, size_t size) {
    if (alignment % sizeof(void *) != 0 || (alignment & (alignment - 1)) != 0 || alignment == 0) return EINVAL;
    void *result = __libc_memalign(alignment, size);
    if (result == NULL) return ENOMEM;
    count_allocation(size);
    *out = result;
    return 0;
}

void *valloc(size_t size) {
    void *result = __libc_valloc(size);
    if (result) count_allocation(size);
    return result;
}

void *pvalloc(size_t size) {
    void *result = __libc_pvalloc(size);
    if (result) count_allocation(size);
    return result;
}

/* A forked child keeps the parent's MAP_SHARED page: give it a private block so the page stays the parent's. */
static void after_fork_in_child(void) {
    __atomic_store_n(&counters, &early, __ATOMIC_RELEASE);
}

__attribute__((constructor(101))) static void map_counter_file(void) {
    const char *path = getenv("ALB_ALLOC_COUNTER_FILE");   /* getenv does not allocate */
    if (path == NULL || *path == '\0') return;
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return;
    long page_size = sysconf(_SC_PAGESIZE);
    if (page_size < (long)sizeof(struct page)) page_size = sizeof(struct page);
    off_t length = lseek(fd, 0, SEEK_END);
    if (length < page_size && ftruncate(fd, page_size) != 0) {
        close(fd);
        return;
    }
    struct page *page = mmap(NULL, (size_t)page_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (page == MAP_FAILED) return;
    uint64_t owner = 0, self = (uint64_t)getpid();
    if (!__atomic_compare_exchange_n(&page->owner_pid, &owner, self, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)
        && owner != self) {
        munmap(page, (size_t)page_size);           /* another process's page: count privately */
        return;
    }
    __atomic_store_n(&counters, page, __ATOMIC_RELEASE);
    /* Move what was counted before the switch (a thread that loaded the old pointer just before the store
       may still add to `early` afterwards and be missed: only possible if threads exist this early). */
    __atomic_fetch_add(&page->allocations, __atomic_exchange_n(&early.allocations, 0, __ATOMIC_RELAXED),
                       __ATOMIC_RELAXED);
    __atomic_fetch_add(&page->frees, __atomic_exchange_n(&early.frees, 0, __ATOMIC_RELAXED), __ATOMIC_RELAXED);
    __atomic_fetch_add(&page->bytes_allocated, __atomic_exchange_n(&early.bytes_allocated, 0, __ATOMIC_RELAXED),
                       __ATOMIC_RELAXED);
    __atomic_fetch_add(&page->reallocs_in_place,
                       __atomic_exchange_n(&early.reallocs_in_place, 0, __ATOMIC_RELAXED), __ATOMIC_RELAXED);
    __atomic_store_n(&page->magic, ALLOC_COUNTER_MAGIC, __ATOMIC_RELEASE);
    pthread_atfork(NULL, NULL, after_fork_in_child);
}
