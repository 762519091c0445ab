/* One quantize run over several processes (MPI): data-parallel calibration.
 *
 * The calibration windows are split among the processes ("ranks") of an
 * `mpirun -np N llmq quantize ...` in whole units (llmq_dist_units), each
 * rank embedding and carrying only its own; everything the solvers need from
 * all windows (Hessians, AWQ's statistics and search losses, clip rows) is
 * combined with exact, order-free sums (llmq/xsum.h), so every rank solves
 * the same bits and the file rank 0 writes is byte for byte the file one
 * process writes. Built in with `make MPI=1` (LLMQ_MPI); without it every
 * function below describes a run of one process, and llmq_dist_init refuses
 * a start by mpirun with more than one rank. */
#ifndef LLMQ_DIST_H
#define LLMQ_DIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Whether this build has MPI. */
bool llmq_dist_built(void);
/* Starts MPI when the build has it and mpirun (or another launcher) started
 * the process; safe to call once at the start of main. A build without MPI
 * started as one of several ranks fails with a message saying so. */
int llmq_dist_init(int *argc, char ***argv);
/* Ends MPI (after init). */
void llmq_dist_finalize(void);
/* Ends every rank of the run at once with exit code `code` (MPI_Abort); in
 * one process, exit(code). */
_Noreturn void llmq_dist_abort(int code);

int llmq_dist_rank(void);       /* 0 in one process */
int llmq_dist_size(void);       /* 1 in one process */
int llmq_dist_local_size(void); /* ranks on this machine (1 in one process) */

/* Calibration windows per unit of work: whole windows of about
 * LLMQ_DIST_UNIT_TOKENS tokens. A unit's partial sums are added one token
 * after another, and units are what the ranks share out, so the unit depends
 * only on the window length, never on the number of ranks. */
#define LLMQ_DIST_UNIT_TOKENS 2048
static inline int llmq_dist_unit_windows(int seqlen) { return seqlen >= LLMQ_DIST_UNIT_TOKENS ? 1 : LLMQ_DIST_UNIT_TOKENS / seqlen; }
/* This rank's windows of n_windows: [*first, *first + *count), whole units,
 * contiguous, the ranks' unit counts differing by at most one. */
void llmq_dist_windows(int n_windows, int seqlen, int *first, int *count);
/* The same for rank `rank` of `size`. */
void llmq_dist_windows_of(int rank, int size, int n_windows, int seqlen, int *first, int *count);
/* This rank's share [*first, *end) of n rows, cut at multiples of `align`
 * (the ranks' block counts differing by at most one; some may get none).
 * One process gets every row. */
void llmq_dist_rows(int n, int align, int *first, int *end);
/* The same for rank `rank` of `size`. */
void llmq_dist_rows_of(int rank, int size, int n, int align, int *first, int *end);

/* Collectives over all ranks (no-ops in one process). Every rank must call
 * them in the same order; a failure is an error message (MPI's own). */
int llmq_dist_sum_i128(void *slots, size_t n); /* exact in-place sum of 128-bit integers */
int llmq_dist_or(void *buf, size_t bytes);     /* bitwise OR: gathers disjoint pieces written over zeros */
int llmq_dist_bcast(void *buf, size_t bytes, int root);
/* Fails, naming `what` and both values, unless every rank passes the same value. */
int llmq_dist_agree(uint64_t value, const char *what);

/* Bytes this rank has passed to all-reduce collectives so far: the
 * communication volume BENCHMARKS.md reports. */
uint64_t llmq_dist_bytes_reduced(void);
/* Seconds this rank has spent in collectives so far (waiting for the others included). */
double llmq_dist_seconds(void);

#endif
