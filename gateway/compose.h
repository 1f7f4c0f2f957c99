/*
 * compose: the call graph of one request (internal to fanout.c): workers of
 * the request's errgroup take ready tasks from r->sched (gateway/graph.h),
 * a whole backend or one foreach item, and run them to call_finish.
 */
#ifndef GATEWAY_COMPOSE_H
#define GATEWAY_COMPOSE_H

#include "gateway/fanout.h"

/* Starts workers in r->group while tasks are ready and slots are free;
 * never parks. r->sched and r->group must be set. */
void spawn_workers(struct request *r);

#endif
