/* GGUF v3 container (ggml docs/gguf.md): a validating reader over a read-only
 * map and a streaming writer that commits atomically.
 *
 * Layout (little-endian): "GGUF", version u32, tensor count u64, kv count u64;
 * kv pairs (key string, value type u32, value); tensor infos (name string,
 * n_dims u32, ne u64[n_dims] in ggml order, type u32, offset u64); zero padding
 * to general.alignment (default 32); the data section. A string is a u64 byte
 * count followed by that many bytes, with no NUL.
 *
 * The reader accepts versions 2 and 3 (the same layout for little-endian files);
 * version 1 (u32 counts) and big-endian files are rejected. Arrays of arrays
 * are rejected, as llama.cpp's reader does. Every failure leaves a one-line
 * message naming the file and the field (llmq_last_error()). */
#ifndef LLMQ_GGUF_H
#define LLMQ_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "llmq/types.h"

/* Value types, numbered as the file numbers them. */
typedef enum {
    LLMQ_GGUF_U8 = 0,
    LLMQ_GGUF_I8 = 1,
    LLMQ_GGUF_U16 = 2,
    LLMQ_GGUF_I16 = 3,
    LLMQ_GGUF_U32 = 4,
    LLMQ_GGUF_I32 = 5,
    LLMQ_GGUF_F32 = 6,
    LLMQ_GGUF_BOOL = 7,
    LLMQ_GGUF_STRING = 8,
    LLMQ_GGUF_ARRAY = 9,
    LLMQ_GGUF_U64 = 10,
    LLMQ_GGUF_I64 = 11,
    LLMQ_GGUF_F64 = 12,
    LLMQ_GGUF_TYPE_COUNT = 13
} llmq_gguf_type;

#define LLMQ_GGUF_DEFAULT_ALIGNMENT 32u
#define LLMQ_GGUF_MAX_DIMS 4
#define LLMQ_GGUF_MAX_NAME 64 /* a tensor name is shorter than this (ggml's GGML_MAX_NAME) */
#define LLMQ_GGUF_ABSENT 1    /* getter status: the key is not in the file */

/* "u8", "string", "array", ...; "?" for an id outside the enum. */
const char *llmq_gguf_type_name(int type);

/* ------------------------------------------------------------------ reader */

typedef struct llmq_gguf llmq_gguf;

/* One tensor as the file describes it. Dims are in ggml order: ne[0] is the
 * row length (innermost, contiguous); dims past n_dims are 1. */
typedef struct {
    const char *name;
    llmq_type type;
    int n_dims;
    int64_t ne[LLMQ_GGUF_MAX_DIMS];
    int64_t n_elements;
    uint64_t offset;  /* from the start of the data section */
    size_t size;      /* bytes */
    const void *data; /* inside the map */
} llmq_gguf_tensor;

/* A metadata value. For an array element, type is the element type. */
typedef struct {
    llmq_gguf_type type;
    union {
        uint64_t u; /* U8, U16, U32, U64 */
        int64_t i;  /* I8, I16, I32, I64 */
        double f;   /* F32 (widened exactly), F64 */
        bool b;     /* BOOL */
        struct {
            const char *ptr; /* NUL-terminated copy; the bytes may hold NULs, len counts them */
            size_t len;
        } str;
        struct {
            llmq_gguf_type elem_type;
            uint64_t count;
        } arr;
    };
} llmq_gguf_value;

/* Maps and validates path. NULL on error, with a message naming path and the field. */
llmq_gguf *llmq_gguf_open(const char *path);
/* Validates a GGUF image in memory (for fuzzing and tests). The caller keeps
 * data alive until llmq_gguf_close; name is used in messages. */
llmq_gguf *llmq_gguf_open_memory(const void *data, size_t size, const char *name);
void llmq_gguf_close(llmq_gguf *g);

const char *llmq_gguf_name(const llmq_gguf *g); /* the path or name given at open */
uint32_t llmq_gguf_version(const llmq_gguf *g);
uint32_t llmq_gguf_alignment(const llmq_gguf *g);
size_t llmq_gguf_data_offset(const llmq_gguf *g); /* file offset of the data section */
size_t llmq_gguf_file_size(const llmq_gguf *g);

/* Metadata, in file order. kv is an index in [0, llmq_gguf_kv_count). */
int64_t llmq_gguf_kv_count(const llmq_gguf *g);
int64_t llmq_gguf_find_key(const llmq_gguf *g, const char *key); /* -1 when absent */
const char *llmq_gguf_kv_key(const llmq_gguf *g, int64_t kv);         /* NULL if out of range */
llmq_gguf_type llmq_gguf_kv_type(const llmq_gguf *g, int64_t kv); /* LLMQ_GGUF_TYPE_COUNT if out of range */
/* The value of kv (for an array: its element type and count). */
int llmq_gguf_kv_value(const llmq_gguf *g, int64_t kv, llmq_gguf_value *out);
/* Element i of the array kv. */
int llmq_gguf_arr_value(const llmq_gguf *g, int64_t kv, uint64_t i, llmq_gguf_value *out);
/* Element i of a string array (NULL if kv is not one or i is out of range). */
const char *llmq_gguf_arr_str(const llmq_gguf *g, int64_t kv, uint64_t i, size_t *len);

/* Scalars by key. LLMQ_OK; LLMQ_GGUF_ABSENT when the key is missing (out
 * untouched, so a preset default survives); LLMQ_ERR when the stored type does
 * not convert losslessly (any integer type converts when the value fits; f64
 * to f32 only when exact). Both failures leave a message naming the key. */
int llmq_gguf_get_u32(const llmq_gguf *g, const char *key, uint32_t *out);
int llmq_gguf_get_i32(const llmq_gguf *g, const char *key, int32_t *out);
int llmq_gguf_get_u64(const llmq_gguf *g, const char *key, uint64_t *out);
int llmq_gguf_get_i64(const llmq_gguf *g, const char *key, int64_t *out);
int llmq_gguf_get_f32(const llmq_gguf *g, const char *key, float *out);
int llmq_gguf_get_f64(const llmq_gguf *g, const char *key, double *out);
int llmq_gguf_get_bool(const llmq_gguf *g, const char *key, bool *out);
int llmq_gguf_get_str(const llmq_gguf *g, const char *key, const char **out, size_t *len);
/* An array of elem_type at key: its kv index (for the arr_ accessors) and
 * count. Same statuses as the scalar getters. */
int llmq_gguf_get_array(const llmq_gguf *g, const char *key, llmq_gguf_type elem_type, int64_t *kv,
                        uint64_t *count);

/* Tensors, in file order. */
int64_t llmq_gguf_tensor_count(const llmq_gguf *g);
const llmq_gguf_tensor *llmq_gguf_tensor_at(const llmq_gguf *g, int64_t i); /* NULL if out of range */
int64_t llmq_gguf_find_tensor(const llmq_gguf *g, const char *name);       /* -1 when absent */
/* The tensor called name, or NULL with a message naming the file and tensor. */
const llmq_gguf_tensor *llmq_gguf_get_tensor(const llmq_gguf *g, const char *name);

/* ------------------------------------------------------------------ writer */

/* Declare everything, begin, write each tensor's data, finish:
 *
 *   llmq_gguf_writer *w = llmq_gguf_writer_new("out.gguf");
 *   llmq_gguf_writer_add_str(w, "general.architecture", "llama");
 *   llmq_gguf_writer_add_tensor(w, "output_norm.weight", LLMQ_TYPE_F32, 1, (int64_t[]){dim});
 *   llmq_gguf_writer_begin(w);                       // header, kvs, tensor infos
 *   llmq_gguf_writer_write_tensor(w, "output_norm.weight", norm, dim * 4);
 *   llmq_gguf_writer_finish(w);                      // fsync + rename into place
 *
 * The file is built in <path>.tmp.<pid> and renamed over path only by a
 * successful finish, so a failure or a kill never leaves a partial file at
 * path. A failed call has no effect, except that an I/O error makes every later
 * call fail. finish and abort free the writer; abort removes the temp file. */
typedef struct llmq_gguf_writer llmq_gguf_writer;

llmq_gguf_writer *llmq_gguf_writer_new(const char *path);

/* Metadata, written in the order added; a key may be added once.
 * general.alignment, when added, must be a u32 power of two and sets the
 * alignment of the data section (default 32). */
int llmq_gguf_writer_add_u32(llmq_gguf_writer *w, const char *key, uint32_t v);
int llmq_gguf_writer_add_i32(llmq_gguf_writer *w, const char *key, int32_t v);
int llmq_gguf_writer_add_u64(llmq_gguf_writer *w, const char *key, uint64_t v);
int llmq_gguf_writer_add_i64(llmq_gguf_writer *w, const char *key, int64_t v);
int llmq_gguf_writer_add_f32(llmq_gguf_writer *w, const char *key, float v);
int llmq_gguf_writer_add_f64(llmq_gguf_writer *w, const char *key, double v);
int llmq_gguf_writer_add_bool(llmq_gguf_writer *w, const char *key, bool v);
int llmq_gguf_writer_add_str(llmq_gguf_writer *w, const char *key, const char *v);
/* Any numeric or bool scalar: value points at a C object of that type
 * (uint8_t, int16_t, ..., float, bool, double). */
int llmq_gguf_writer_add_scalar(llmq_gguf_writer *w, const char *key, llmq_gguf_type type,
                                const void *value);
/* An array of n elements: elems is a C array of the element's C type, or a
 * const char *const * for strings. */
int llmq_gguf_writer_add_array(llmq_gguf_writer *w, const char *key, llmq_gguf_type elem_type,
                               const void *elems, uint64_t n);

/* Declares a tensor: name shorter than LLMQ_GGUF_MAX_NAME bytes, 1..4 dims in
 * ggml order (ne[0] = row length, a multiple of the type's block size). */
int llmq_gguf_writer_add_tensor(llmq_gguf_writer *w, const char *name, llmq_type type, int n_dims,
                                const int64_t *ne);
/* Builds the file at tmp_path instead of <path>.tmp.<pid> (same file system
 * as path; an existing file there is replaced). Before begin. */
int llmq_gguf_writer_set_temp_path(llmq_gguf_writer *w, const char *tmp_path);
/* Bytes the data of a declared tensor takes (0 if name is not declared). */
size_t llmq_gguf_writer_tensor_size(const llmq_gguf_writer *w, const char *name);

/* Creates the temp file and writes header, metadata, tensor infos and padding. */
int llmq_gguf_writer_begin(llmq_gguf_writer *w);
/* Writes the data of a declared tensor (any order, each once); size must be
 * the tensor's byte size. */
int llmq_gguf_writer_write_tensor(llmq_gguf_writer *w, const char *name, const void *data,
                                  size_t size);
/* Checks every tensor was written, then commits. Frees w either way. */
int llmq_gguf_writer_finish(llmq_gguf_writer *w);
/* Frees w and removes the temp file; path is left as it was. NULL is fine. */
void llmq_gguf_writer_abort(llmq_gguf_writer *w);

#endif
