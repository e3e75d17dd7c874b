// Linux calls Swift's Glibc module does not export, for ParkedConnections (ALBDataPlane) alone: an epoll
// set and an eventfd of its own, and malloc_trim to give the memory of parked connections back.
#include <malloc.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
