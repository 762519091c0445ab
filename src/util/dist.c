/* One quantize run over several processes (llmq/dist.h): MPI when built
 * with LLMQ_MPI (`make MPI=1`), one process otherwise. */
#include "llmq/dist.h"
#include "llmq/error.h"

#include <limits.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

static uint64_t bytes_reduced;
static double seconds_in_collectives;

uint64_t llmq_dist_bytes_reduced(void) { return bytes_reduced; }
double llmq_dist_seconds(void) { return seconds_in_collectives; }

void llmq_dist_windows(int n_windows, int seqlen, int *first, int *count)
{
    llmq_dist_windows_of(llmq_dist_rank(), llmq_dist_size(), n_windows, seqlen, first, count);
}

void llmq_dist_windows_of(int rank, int size, int n_windows, int seqlen, int *first, int *count)
{
    const int g = llmq_dist_unit_windows(seqlen), units = (n_windows + g - 1) / g;
    const int u0 = (int)((int64_t)units * rank / size), u1 = (int)((int64_t)units * (rank + 1) / size);
    const int w0 = u0 * g, w1 = u1 * g < n_windows ? u1 * g : n_windows;
    *first = w0;
    *count = w1 > w0 ? w1 - w0 : 0;
}

void llmq_dist_rows(int n, int align, int *first, int *end) { llmq_dist_rows_of(llmq_dist_rank(), llmq_dist_size(), n, align, first, end); }

void llmq_dist_rows_of(int rank, int size, int n, int align, int *first, int *end)
{
    const int blocks = (n + align - 1) / align;
    /* rounded up, so that rank 0 has rows whenever there are any */
    const int b0 = (int)(((int64_t)blocks * rank + size - 1) / size), b1 = (int)(((int64_t)blocks * (rank + 1) + size - 1) / size);
    *first = b0 * align < n ? b0 * align : n;
    *end = b1 * align < n ? b1 * align : n;
}

/* The launcher's rank count when one started this process, else 0. */
static int launched_size(void)
{
    static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MPI_LOCALNRANKS"};
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++) {
        const char *v = getenv(vars[i]);
        if (v && *v) return atoi(v);
    }
    return 0;
}

#ifdef LLMQ_MPI
#include <mpi.h>

static bool started;
static int world_rank, world_size = 1, local_size = 1;
static MPI_Datatype i128_type;
static MPI_Op i128_sum;

static void sum_i128(void *in, void *inout, int *len, MPI_Datatype *type)
{
    (void)type;
    const unsigned __int128 *a = in; /* modulo 2¹²⁸, as llmq_xsum adds: no signed overflow */
    unsigned __int128 *b = inout;
    for (int i = 0; i < *len; i++) b[i] += a[i];
}

bool llmq_dist_built(void) { return true; }

int llmq_dist_init(int *argc, char ***argv)
{
    if (started || launched_size() < 1) return LLMQ_OK; /* not started by a launcher: one process, MPI left alone */
    int provided;
    if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) return llmq_error("MPI_Init_thread failed");
    started = true;
    MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world_size);
    MPI_Comm local;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &local);
    MPI_Comm_size(local, &local_size);
    MPI_Comm_free(&local);
    MPI_Type_contiguous(16, MPI_BYTE, &i128_type);
    MPI_Type_commit(&i128_type);
    MPI_Op_create(sum_i128, 1, &i128_sum);
    return LLMQ_OK;
}

void llmq_dist_finalize(void)
{
    if (!started) return;
    MPI_Op_free(&i128_sum);
    MPI_Type_free(&i128_type);
    MPI_Finalize();
    started = false;
}

_Noreturn void llmq_dist_abort(int code)
{
    if (started && world_size > 1) {
        fflush(stdout);
        fflush(stderr);
        MPI_Abort(MPI_COMM_WORLD, code);
    }
    exit(code);
}

int llmq_dist_rank(void) { return world_rank; }
int llmq_dist_size(void) { return world_size; }
int llmq_dist_local_size(void) { return local_size; }

static int mpi_failed(int rc, const char *what)
{
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    return llmq_error("%s: %s", what, msg);
}

/* count elements per call, at most INT_MAX at a time */
#define PIECES(n, most) for (size_t at = 0, cnt; at < (n) && ((cnt = (n) - at < (most) ? (n) - at : (most)), 1); at += cnt)

int llmq_dist_sum_i128(void *slots, size_t n)
{
    if (world_size == 1) return LLMQ_OK;
    const double t0 = omp_get_wtime();
    PIECES(n, (size_t)1 << 26)
    {
        int rc = MPI_Allreduce(MPI_IN_PLACE, (char *)slots + at * 16, (int)cnt, i128_type, i128_sum, MPI_COMM_WORLD);
        if (rc != MPI_SUCCESS) return mpi_failed(rc, "exact sum across ranks");
    }
    bytes_reduced += n * 16;
    seconds_in_collectives += omp_get_wtime() - t0;
    return LLMQ_OK;
}

int llmq_dist_or(void *buf, size_t bytes)
{
    if (world_size == 1) return LLMQ_OK;
    const double t0 = omp_get_wtime();
    PIECES(bytes, (size_t)1 << 30)
    {
        int rc = MPI_Allreduce(MPI_IN_PLACE, (char *)buf + at, (int)cnt, MPI_BYTE, MPI_BOR, MPI_COMM_WORLD);
        if (rc != MPI_SUCCESS) return mpi_failed(rc, "gathering across ranks");
    }
    bytes_reduced += bytes;
    seconds_in_collectives += omp_get_wtime() - t0;
    return LLMQ_OK;
}

int llmq_dist_bcast(void *buf, size_t bytes, int root)
{
    if (world_size == 1) return LLMQ_OK;
    const double t0 = omp_get_wtime();
    PIECES(bytes, (size_t)1 << 30)
    {
        int rc = MPI_Bcast((char *)buf + at, (int)cnt, MPI_BYTE, root, MPI_COMM_WORLD);
        if (rc != MPI_SUCCESS) return mpi_failed(rc, "broadcast across ranks");
    }
    seconds_in_collectives += omp_get_wtime() - t0;
    return LLMQ_OK;
}

int llmq_dist_agree(uint64_t value, const char *what)
{
    if (world_size == 1) return LLMQ_OK;
    uint64_t lo = value, hi = value;
    if (MPI_Allreduce(MPI_IN_PLACE, &lo, 1, MPI_UINT64_T, MPI_MIN, MPI_COMM_WORLD) != MPI_SUCCESS ||
        MPI_Allreduce(MPI_IN_PLACE, &hi, 1, MPI_UINT64_T, MPI_MAX, MPI_COMM_WORLD) != MPI_SUCCESS)
        return llmq_error("%s: comparing across ranks failed", what);
    if (lo != hi)
        return llmq_error("%s differs between ranks (%llu on rank %d; values from %llu to %llu): every rank must compute the same bits",
                          what, (unsigned long long)value, world_rank, (unsigned long long)lo, (unsigned long long)hi);
    return LLMQ_OK;
}

#else /* one process */

bool llmq_dist_built(void) { return false; }

int llmq_dist_init(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    const int n = launched_size();
    if (n > 1)
        return llmq_error("started by mpirun as one of %d ranks, but this llmq was built without MPI: rebuild with `make MPI=1` "
                          "(needs Open MPI's mpicc, libopenmpi-dev)", n);
    return LLMQ_OK;
}

void llmq_dist_finalize(void) {}
_Noreturn void llmq_dist_abort(int code) { exit(code); }
int llmq_dist_rank(void) { return 0; }
int llmq_dist_size(void) { return 1; }
int llmq_dist_local_size(void) { return 1; }
int llmq_dist_sum_i128(void *slots, size_t n) { (void)slots, (void)n; return LLMQ_OK; }
int llmq_dist_or(void *buf, size_t bytes) { (void)buf, (void)bytes; return LLMQ_OK; }
int llmq_dist_bcast(void *buf, size_t bytes, int root) { (void)buf, (void)bytes, (void)root; return LLMQ_OK; }
int llmq_dist_agree(uint64_t value, const char *what) { (void)value, (void)what; return LLMQ_OK; }

#endif
