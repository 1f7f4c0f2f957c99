/*
 * container_of: the one definition for the whole tree (core, gateway, tests).
 *
 * container_of(p, type, member) turns p, a pointer to the member `member`
 * embedded in a `type`, back into a pointer to that `type`. p must really
 * point into a `type` (nothing is checked); the result is as const as the
 * cast makes it, so keep the constness of p in mind.
 */
#ifndef CORE_CONTAINER_OF_H
#define CORE_CONTAINER_OF_H

#include <stddef.h>

#define container_of(p, type, member) ((type *)(void *)((char *)(p)-offsetof(type, member)))

#endif
