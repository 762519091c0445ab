/* Resumable quantization (llmq_quant_opts.state, `llmq quantize --resume`):
 * a run stopped after any layer — by the library's stop hook or by SIGKILL of
 * the CLI — and resumed writes the same bytes as an uninterrupted run; the
 * state directory goes when the file is done; and a resume whose inputs
 * differ from the interrupted run's, or whose state is damaged, is refused
 * with a message naming the difference, leaving the state as it was. */
#include "llmq/calib.h"
#include "llmq/calibrated.h"
#include "llmq/error.h"
#include "llmq/file.h"
#include "llmq/kernels.h"
#include "llmq/model.h"
#include "llmq/quantize.h"
#include "llmq/synth.h"
#include "llmq/tokenizer.h"
#include "synth_model.h"
#include "test_util.h"

#include <dirent.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <sys/file.h>

/* ------------------------------------------------------------ fixture */

static char case_root[256];

static void resume_teardown(void)
{
    if (case_root[0] && !getenv("LLMQ_KEEP_TMP") && strstr(case_root, "build/tmp/resume-")) {
        char cmd[600];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", case_root);
        if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", case_root);
    }
}

TestSuite(resume, .fini = resume_teardown);
TestSuite(resume_cli, .fini = resume_teardown);

/* The demo checkpoint (4 layers, hidden 256) in a fresh scratch directory. */
static void demo_dir(char *dir, size_t cap, const char *tag)
{
    test_tmpdir(dir, cap, tag);
    snprintf(case_root, sizeof case_root, "%s", dir);
    char model[300];
    snprintf(model, sizeof model, "%s/demo", dir);
    llmq_synth_opts so;
    llmq_synth_defaults(&so);
    so.calib_bytes = 60000;
    so.eval_bytes = 1000;
    cr_assert_eq(llmq_synth_write(model, &so), LLMQ_OK, "%s", llmq_last_error());
}

typedef struct {
    const llmq_model *m;
    const llmq_tokenizer *tok;
    const char *method; /* rtn, gptq, awq, awq+gptq */
    const char *type;
    float damp;
    const llmq_calib *calib;
    llmq_state_mode state;
    int stop_after;
    int threads;
    char notices[2048];
} run_spec;

static void on_notice(void *user, const char *line)
{
    run_spec *r = user;
    size_t n = strlen(r->notices);
    snprintf(r->notices + n, sizeof r->notices - n, "%s\n", line);
}

/* One quantize run as `llmq quantize` makes it (the same fingerprint parameters). */
static int quantize(run_spec *r, const char *out, llmq_quant_report *rep)
{
    llmq_set_threads(r->threads ? r->threads : 2);
    llmq_policy pol = {.group_size = 128, .keep_output = -1, .keep_embed = -1};
    cr_assert_eq(llmq_quant_scheme_parse(r->type ? r->type : "q4_k_m", &pol.scheme), LLMQ_OK);
    const bool gptaq = strstr(r->method, "gptaq") != NULL;
    int kind = !strcmp(r->method, "rtn") ? -1 : !strcmp(r->method, "gptq") || !strcmp(r->method, "gptaq") ? LLMQ_CAL_GPTQ
             : !strcmp(r->method, "awq") ? LLMQ_CAL_AWQ : LLMQ_CAL_AWQ_GPTQ;
    llmq_layer_method lm = {0};
    llmq_calibrated_opts co = {0};
    char damp[32];
    snprintf(damp, sizeof damp, "%g", (double)(r->damp ? r->damp : 0.01f));
    llmq_quant_param params[] = {{"--damp", damp}, {"--act-order", "off"}};
    if (kind >= 0) {
        co.kind = (llmq_calibrated_kind)kind;
        co.calib = r->calib;
        co.gptq = llmq_gptq_default_opts();
        co.gptq.damp = r->damp ? r->damp : 0.01f;
        co.asymmetric = gptaq;
        co.gptaq_alpha = 1.0f;
        llmq_awq_defaults(&co.awq);
        cr_assert_eq(llmq_calibrated_method(&co, &lm), LLMQ_OK);
    }
    r->notices[0] = 0;
    llmq_quant_opts o = {
        .policy = pol,
        .method = kind >= 0 ? &lm : NULL,
        .model_name = "demo",
        .calib_sha256 = kind >= 0 ? r->calib->sha256 : NULL,
        .calib_samples = kind >= 0 ? r->calib->n_samples : 0,
        .notice = on_notice,
        .user = r,
        .state = r->state,
        .params = params,
        .n_params = kind >= 0 ? 2 : 0,
        .stop_after_layers = r->stop_after,
    };
    llmq_quant_report local;
    int rc = llmq_quantize_model(r->m, r->tok, out, &o, rep ? rep : &local);
    if (rc == LLMQ_OK && !rep) llmq_quant_report_free(&local);
    llmq_calibrated_method_free(&lm);
    return rc;
}

static unsigned char *slurp(const char *path, size_t *n)
{
    unsigned char *p = (unsigned char *)llmq_read_file(path, 0, n);
    cr_assert_not_null(p, "%s", llmq_last_error());
    return p;
}

static void expect_same_file(const char *a, const char *b, const char *what)
{
    size_t na, nb;
    unsigned char *pa = slurp(a, &na), *pb = slurp(b, &nb);
    cr_expect_eq(na, nb, "%s: %zu bytes, the uninterrupted run wrote %zu", what, nb, na);
    size_t first = 0;
    while (first < na && first < nb && pa[first] == pb[first]) first++;
    cr_expect(na == nb && first == na, "%s: differs from the uninterrupted run from byte %zu on", what, first);
    free(pa);
    free(pb);
}

static bool exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static int layer_files(const char *state)
{
    int n = 0;
    for (int l = 0; l < 64; l++) {
        char p[600];
        snprintf(p, sizeof p, "%s/layer-%05d.bin", state, l);
        n += exists(p);
    }
    return n;
}

/* Every file of a directory with its sha256, sorted: equal strings = an untouched directory. */
static char *snapshot(const char *dir)
{
    struct dirent **names;
    int n = scandir(dir, &names, NULL, alphasort);
    cr_assert(n >= 0, "scandir %s", dir);
    size_t cap = 64 + (size_t)n * 400, len = 0;
    char *s = malloc(cap);
    s[0] = 0;
    for (int i = 0; i < n; i++) {
        if (names[i]->d_name[0] != '.') {
            char p[700];
            snprintf(p, sizeof p, "%s/%s", dir, names[i]->d_name);
            size_t sz;
            unsigned char *data = slurp(p, &sz), d[EVP_MAX_MD_SIZE];
            unsigned dn = 0;
            EVP_Digest(data, sz, d, &dn, EVP_sha256(), NULL);
            len += (size_t)snprintf(s + len, cap - len, "%s %zu ", names[i]->d_name, sz);
            for (unsigned k = 0; k < 8; k++) len += (size_t)snprintf(s + len, cap - len, "%02x", d[k]);
            len += (size_t)snprintf(s + len, cap - len, "\n");
            free(data);
        }
        free(names[i]);
    }
    free(names);
    return s;
}

typedef struct {
    char dir[256], model[320], out[400], state[420], ref[400];
    llmq_model *m;
    llmq_tokenizer *tok;
    llmq_calib calib;
} fixture;

static void fixture_open(fixture *f, const char *tag, int samples, int seqlen)
{
    memset(f, 0, sizeof *f);
    demo_dir(f->dir, sizeof f->dir, tag);
    snprintf(f->model, sizeof f->model, "%s/demo", f->dir);
    snprintf(f->out, sizeof f->out, "%s/out.gguf", f->dir);
    snprintf(f->state, sizeof f->state, "%s.partial", f->out);
    snprintf(f->ref, sizeof f->ref, "%s/ref.gguf", f->dir);
    f->m = llmq_model_load(f->model);
    cr_assert_not_null(f->m, "%s", llmq_last_error());
    f->tok = llmq_tokenizer_load(f->model);
    cr_assert_not_null(f->tok, "%s", llmq_last_error());
    if (samples == 0) return; /* RTN: no calibration */
    char calib[400];
    snprintf(calib, sizeof calib, "%s/calib.txt", f->model);
    llmq_calib_opts cop = {samples, seqlen, 0};
    cr_assert_eq(llmq_calib_from_file(f->tok, calib, &cop, &f->calib), LLMQ_OK, "%s", llmq_last_error());
}

static void fixture_close(fixture *f)
{
    llmq_calib_free(&f->calib);
    llmq_tokenizer_free(f->tok);
    llmq_model_free(f->m);
}

/* The reference file (no state), a recorded uninterrupted run (same bytes,
 * state gone), then for every k: a run stopped after k layers (an error,
 * nothing at the output, k layer files) resumed with another thread count. */
static void check_stops(const char *tag, const char *method, int samples, int seqlen, const int *ks, int n_ks)
{
    fixture f;
    fixture_open(&f, tag, samples, seqlen);
    run_spec r = {.m = f.m, .tok = f.tok, .method = method, .calib = &f.calib, .threads = 2};
    llmq_quant_report ref_rep;
    cr_assert_eq(quantize(&r, f.ref, &ref_rep), LLMQ_OK, "%s", llmq_last_error());
    cr_assert(!exists(f.state), "a run without a state mode records nothing");

    r.state = LLMQ_STATE_RECORD;
    llmq_quant_report rep;
    cr_assert_eq(quantize(&r, f.out, &rep), LLMQ_OK, "%s", llmq_last_error());
    cr_expect_eq(rep.resumed_layers, 0);
    llmq_quant_report_free(&rep);
    expect_same_file(f.ref, f.out, "recorded, uninterrupted");
    cr_expect(!exists(f.state), "the state is removed once the file is written");
    cr_expect_str_eq(r.notices, "");
    unlink(f.out);

    for (int i = 0; i < n_ks; i++) {
        int k = ks[i];
        r.state = LLMQ_STATE_RECORD;
        r.stop_after = k;
        r.threads = 1;
        cr_assert_eq(quantize(&r, f.out, NULL), LLMQ_ERR, "%s: stop after %d", method, k);
        char want[64];
        snprintf(want, sizeof want, "stopped after layer %d/4", k);
        cr_expect(strstr(llmq_last_error(), want), "%s", llmq_last_error());
        cr_expect(!exists(f.out), "nothing at the output after a stop");
        cr_expect_eq(layer_files(f.state), k, "%s: %d layer files after a stop after %d", method, layer_files(f.state), k);

        r.state = LLMQ_STATE_RESUME;
        r.stop_after = 0;
        r.threads = 2;
        cr_assert_eq(quantize(&r, f.out, &rep), LLMQ_OK, "%s: resume after %d: %s", method, k, llmq_last_error());
        cr_expect_eq(rep.resumed_layers, k, "%s: resumed %d layers, not %d", method, rep.resumed_layers, k);
        snprintf(want, sizeof want, "resuming after layer %d/4", k);
        cr_expect(strstr(r.notices, want), "%s: notices: %s", method, r.notices);
        /* the report is the uninterrupted run's too: every tensor, restored errors included */
        cr_assert_eq(rep.n_tensors, ref_rep.n_tensors);
        for (int t = 0; t < rep.n_tensors; t++) {
            const llmq_tensor_report *a = &rep.tensors[t], *b = &ref_rep.tensors[t];
            cr_expect(!strcmp(a->name, b->name) && a->type == b->type && a->bytes == b->bytes && a->rel_error == b->rel_error,
                      "%s after %d: %s %.17g, the uninterrupted run: %s %.17g", method, k, a->name, a->rel_error, b->name, b->rel_error);
        }
        cr_expect_gt(rep.tensors[2].rel_error, 0.001, "%s: %s", method, rep.tensors[2].name);
        llmq_quant_report_free(&rep);
        char what[64];
        snprintf(what, sizeof what, "%s stopped after %d, resumed", method, k);
        expect_same_file(f.ref, f.out, what);
        cr_expect(!exists(f.state), "%s: the state is removed after the resumed run", what);
        unlink(f.out);
    }
    llmq_quant_report_free(&ref_rep);
    fixture_close(&f);
}

Test(resume, rtn_stopped_after_each_layer_resumes_byte_identical, .timeout = 300)
{
    const int ks[] = {1, 2, 3, 4};
    check_stops("resume-rtn", "rtn", 0, 0, ks, 4);
}

Test(resume, gptq_stopped_after_each_layer_resumes_byte_identical, .timeout = 300)
{
    const int ks[] = {1, 2, 3, 4};
    check_stops("resume-gptq", "gptq", 4, 128, ks, 4);
}

/* AWQ folds scales into the norms: the stored norms are the folded ones. */
Test(resume, awq_resumes_byte_identical, .timeout = 300)
{
    const int ks[] = {2};
    check_stops("resume-awq", "awq", 2, 64, ks, 1);
}

Test(resume, awq_gptq_resumes_byte_identical, .timeout = 300)
{
    const int ks[] = {1, 3};
    check_stops("resume-awqgptq", "awq+gptq", 2, 64, ks, 2);
}

/* GPTAQ's full-precision stream passes the restored layers through the source's. */
Test(resume, gptaq_resumes_byte_identical, .timeout = 300)
{
    const int ks[] = {1, 3};
    check_stops("resume-gptaq", "gptaq", 2, 64, ks, 2);
}

/* A Llama with q/k/v biases: q and k rows and biases are permuted on write,
 * the state keeps them in Hugging Face order, so the restored layer the
 * method runs its activations through is the one it quantized. */
Test(resume, biased_llama_gptq_resumes_byte_identical, .timeout = 300)
{
    char dir[256], ref[300], out[300], state[320];
    test_tmpdir(dir, sizeof dir, "resume-bias");
    snprintf(case_root, sizeof case_root, "%s", dir);
    snprintf(ref, sizeof ref, "%s/ref.gguf", dir);
    snprintf(out, sizeof out, "%s/out.gguf", dir);
    snprintf(state, sizeof state, "%s.partial", out);
    synth_spec s = {"llama", 3, 256, 4, 2, 512, 400, false, true, 7};
    llmq_model *m = synth_model(&s);
    llmq_tokenizer *tok = synth_tokenizer(400);
    int32_t ids[2000];
    synth_tokens(ids, 2000, 400);
    llmq_calib calib;
    llmq_calib_opts cop = {4, 64, 1};
    cr_assert_eq(llmq_calib_sample(ids, 2000, &cop, &calib), LLMQ_OK, "%s", llmq_last_error());
    snprintf(calib.sha256, sizeof calib.sha256, "synthetic");
    run_spec r = {.m = m, .tok = tok, .method = "gptq", .type = "q4_0", .calib = &calib};
    cr_assert_eq(quantize(&r, ref, NULL), LLMQ_OK, "%s", llmq_last_error());
    r.state = LLMQ_STATE_RECORD;
    r.stop_after = 2;
    cr_assert_eq(quantize(&r, out, NULL), LLMQ_ERR);
    cr_assert_eq(layer_files(state), 2);
    r.state = LLMQ_STATE_RESUME;
    r.stop_after = 0;
    cr_assert_eq(quantize(&r, out, NULL), LLMQ_OK, "%s", llmq_last_error());
    expect_same_file(ref, out, "biased llama, resumed after 2");
    cr_expect(!exists(state));
    llmq_calib_free(&calib);
    llmq_tokenizer_free(tok);
    llmq_model_free(m);
}

/* A 4-layer GPTQ run of fixture f (opened here): the uninterrupted reference
 * in f->ref, then a recorded run stopped after `stop_after` layers into
 * f->out; *r is left as that recorded run's spec. */
static void interrupted_gptq(fixture *f, const char *tag, int stop_after, run_spec *r)
{
    fixture_open(f, tag, 4, 128);
    *r = (run_spec){.m = f->m, .tok = f->tok, .method = "gptq", .calib = &f->calib};
    cr_assert_eq(quantize(r, f->ref, NULL), LLMQ_OK, "%s", llmq_last_error());
    r->state = LLMQ_STATE_RECORD;
    r->stop_after = stop_after;
    cr_assert_eq(quantize(r, f->out, NULL), LLMQ_ERR);
}

/* Resumed twice, and resumed when every layer was done (a stop before the head). */
Test(resume, resumes_twice_and_after_the_last_layer, .timeout = 300)
{
    fixture f;
    run_spec r;
    interrupted_gptq(&f, "resume-twice", 1, &r);
    r.state = LLMQ_STATE_RESUME;
    cr_assert_eq(quantize(&r, f.out, NULL), LLMQ_ERR, "the resumed run stops after one more layer");
    cr_expect(strstr(llmq_last_error(), "stopped after layer 2/4"), "%s", llmq_last_error());
    cr_expect_eq(layer_files(f.state), 2);
    r.stop_after = 2;
    cr_assert_eq(quantize(&r, f.out, NULL), LLMQ_ERR);
    cr_expect(strstr(llmq_last_error(), "stopped after layer 4/4"), "%s", llmq_last_error());
    cr_expect_eq(layer_files(f.state), 4);
    r.stop_after = 0;
    llmq_quant_report rep;
    cr_assert_eq(quantize(&r, f.out, &rep), LLMQ_OK, "%s", llmq_last_error());
    cr_expect_eq(rep.resumed_layers, 4);
    cr_expect(strstr(r.notices, "resuming after layer 4/4"), "%s", r.notices);
    llmq_quant_report_free(&rep);
    expect_same_file(f.ref, f.out, "resumed with all layers done");
    cr_expect(!exists(f.state));
    fixture_close(&f);
}

/* --resume without a state starts from the first layer (a notice says so); a
 * run without --resume discards an earlier state (a notice says how much). */
Test(resume, without_a_state_or_without_resume_the_run_starts_over, .timeout = 300)
{
    fixture f;
    fixture_open(&f, "resume-fresh", 4, 128);
    run_spec r = {.m = f.m, .tok = f.tok, .method = "rtn"};
    cr_assert_eq(quantize(&r, f.ref, NULL), LLMQ_OK, "%s", llmq_last_error());
    r.state = LLMQ_STATE_RESUME;
    llmq_quant_report rep;
    cr_assert_eq(quantize(&r, f.out, &rep), LLMQ_OK, "%s", llmq_last_error());
    cr_expect_eq(rep.resumed_layers, 0);
    llmq_quant_report_free(&rep);
    char want[600];
    snprintf(want, sizeof want, "no state to resume from in %s: starting from the first layer\n", f.state);
    cr_expect_str_eq(r.notices, want);
    expect_same_file(f.ref, f.out, "--resume without a state");
    unlink(f.out);

    r.state = LLMQ_STATE_RECORD;
    r.stop_after = 3;
    cr_assert_eq(quantize(&r, f.out, NULL), LLMQ_ERR);
    r.stop_after = 0;
    cr_assert_eq(quantize(&r, f.out, &rep), LLMQ_OK, "%s", llmq_last_error());
    cr_expect_eq(rep.resumed_layers, 0);
    llmq_quant_report_free(&rep);
    snprintf(want, sizeof want, "discarding the state of an interrupted run in %s (3 of 4 layers; --resume continues it)\n", f.state);
    cr_expect_str_eq(r.notices, want);
    expect_same_file(f.ref, f.out, "recorded over an earlier state");
    cr_expect(!exists(f.state));

    /* A failure before any layer finished leaves no state behind. */
    unlink(f.out);
    r.state = LLMQ_STATE_RECORD;
    mkdir(f.out, 0755); /* the output path is a directory: the final rename fails */
    cr_assert_eq(quantize(&r, f.out, NULL), LLMQ_ERR);
    cr_expect(exists(f.state) && layer_files(f.state) == 4, "a failure after the layers keeps them");
    rmdir(f.out);
    r.state = LLMQ_STATE_RESUME;
    cr_assert_eq(quantize(&r, f.out, &rep), LLMQ_OK, "%s", llmq_last_error());
    cr_expect_eq(rep.resumed_layers, 4);
    llmq_quant_report_free(&rep);
    expect_same_file(f.ref, f.out, "resumed after a failed rename");
    fixture_close(&f);
}

/* ------------------------------------------------------------ refusals */

typedef struct {
    fixture *f;
    const char *snap;
} refusal_ctx;

/* A resume that must fail: the message holds each of want[], nothing appears
 * at the output, and the state directory is byte for byte what it was. */
static void expect_refused(refusal_ctx *c, run_spec *r, const char *case_name, const char *const *want, int n_want)
{
    r->state = LLMQ_STATE_RESUME;
    r->stop_after = 0;
    cr_assert_eq(quantize(r, c->f->out, NULL), LLMQ_ERR, "%s: the resume was not refused", case_name);
    const char *msg = llmq_last_error();
    cr_expect(!strchr(msg, '\n'), "%s: one line: %s", case_name, msg);
    for (int i = 0; i < n_want; i++) cr_expect(strstr(msg, want[i]), "%s: '%s' not in: %s", case_name, want[i], msg);
    cr_expect(!exists(c->f->out), "%s: something at the output", case_name);
    char *now = snapshot(c->f->state);
    cr_expect_str_eq(now, c->snap, "%s: the state changed", case_name);
    free(now);
}

static void copy_file(const char *from, const char *to)
{
    size_t n;
    unsigned char *p = slurp(from, &n);
    FILE *fp = fopen(to, "wb");
    cr_assert(fp && fwrite(p, 1, n, fp) == n && fclose(fp) == 0, "write %s", to);
    free(p);
}

static void poke(const char *path, long at, unsigned char xor_with)
{
    FILE *fp = fopen(path, "r+b");
    cr_assert_not_null(fp, "%s", path);
    int c = EOF;
    cr_assert(fseek(fp, at, SEEK_SET) == 0 && (c = fgetc(fp)) != EOF);
    fseek(fp, at, SEEK_SET);
    fputc(c ^ xor_with, fp);
    fclose(fp);
}

Test(resume, refusals_name_the_difference_and_leave_the_state_untouched, .timeout = 300)
{
    fixture f;
    run_spec r;
    interrupted_gptq(&f, "resume-refuse", 2, &r);
    cr_assert_eq(layer_files(f.state), 2);
    char *snap = snapshot(f.state);
    refusal_ctx c = {&f, snap};
    char path[600], save[600];

    /* Changed options. */
    run_spec t = r;
    t.type = "q4_0";
    expect_refused(&c, &t, "--type", (const char *const[]){"cannot resume", "--type: q4_0 now, q4_k_m in the interrupted run"}, 2);
    t = r;
    t.damp = 0.05f;
    expect_refused(&c, &t, "--damp", (const char *const[]){"--damp: 0.05 now, 0.01 in the interrupted run"}, 1);
    t = r;
    t.method = "awq+gptq";
    expect_refused(&c, &t, "--method", (const char *const[]){"--method: awq+gptq now, gptq in the interrupted run"}, 1);

    /* Another calibration file. */
    llmq_calib other;
    char eval[400];
    snprintf(eval, sizeof eval, "%s/eval.txt", f.model);
    FILE *fp = fopen(eval, "a");
    for (int i = 0; i < 40; i++) fputs("the cat sat on the mat and the dog ran to the park. ", fp);
    fclose(fp);
    llmq_calib_opts cop = {4, 128, 0};
    cr_assert_eq(llmq_calib_from_file(f.tok, eval, &cop, &other), LLMQ_OK, "%s", llmq_last_error());
    t = r;
    t.calib = &other;
    char want_calib[128];
    snprintf(want_calib, sizeof want_calib, "--calib: sha256 %.16s… now, sha256 %.16s…", other.sha256, f.calib.sha256);
    expect_refused(&c, &t, "--calib", (const char *const[]){want_calib}, 1);
    llmq_calib_free(&other);

    /* Touched weights: one byte of the checkpoint's data section changed. */
    char model2[400], st2[500], cfg2[500];
    snprintf(model2, sizeof model2, "%s/demo2", f.dir);
    mkdir(model2, 0755);
    snprintf(path, sizeof path, "%s/model.safetensors", f.model);
    snprintf(st2, sizeof st2, "%s/model.safetensors", model2);
    copy_file(path, st2);
    snprintf(path, sizeof path, "%s/config.json", f.model);
    snprintf(cfg2, sizeof cfg2, "%s/config.json", model2);
    copy_file(path, cfg2);
    struct stat sb;
    stat(st2, &sb);
    poke(st2, (long)sb.st_size - 1001, 0x01); /* inside the last tensor's data, an exact low bit of a BF16 */
    llmq_model *m2 = llmq_model_load(model2);
    cr_assert_not_null(m2, "%s", llmq_last_error());
    t = r;
    t.m = m2;
    expect_refused(&c, &t, "touched weights", (const char *const[]){"the source checkpoint differs: tensor ", "in the interrupted run"}, 2);
    llmq_model_free(m2);

    /* A corrupt layer file: one byte of its tensor data flipped. */
    snprintf(path, sizeof path, "%s/layer-00001.bin", f.state);
    snprintf(save, sizeof save, "%s/layer1.save", f.dir);
    copy_file(path, save);
    stat(path, &sb);
    poke(path, (long)sb.st_size - 100, 0x40);
    free(snap);
    c.snap = snap = snapshot(f.state);
    expect_refused(&c, &r, "corrupt layer", (const char *const[]){"layer-00001.bin: blk.1.", "does not match the recorded", "the state is damaged"}, 3);
    /* ... truncated */
    copy_file(save, path);
    cr_assert_eq(truncate(path, sb.st_size / 2), 0);
    free(snap);
    c.snap = snap = snapshot(f.state);
    expect_refused(&c, &r, "truncated layer", (const char *const[]){"layer-00001.bin: size: ", "the state is damaged"}, 2);
    /* ... its header damaged */
    copy_file(save, path);
    poke(path, 20, '{' ^ '~');
    free(snap);
    c.snap = snap = snapshot(f.state);
    expect_refused(&c, &r, "layer header", (const char *const[]){"layer-00001.bin: header: ", "the state is damaged"}, 2);
    copy_file(save, path);

    /* A truncated manifest, then one from another llmq version. */
    snprintf(path, sizeof path, "%s/manifest.json", f.state);
    snprintf(save, sizeof save, "%s/manifest.save", f.dir);
    copy_file(path, save);
    stat(path, &sb);
    cr_assert_eq(truncate(path, sb.st_size / 2), 0);
    free(snap);
    c.snap = snap = snapshot(f.state);
    expect_refused(&c, &r, "truncated manifest", (const char *const[]){"manifest.json: line ", "the state is damaged"}, 2);
    json_error_t je;
    json_t *mj = json_load_file(save, 0, &je);
    cr_assert_not_null(mj, "%s", je.text);
    json_object_set_new(mj, "llmq_version", json_string("0.0.9"));
    cr_assert_eq(json_dump_file(mj, path, JSON_INDENT(1)), 0);
    json_decref(mj);
    free(snap);
    c.snap = snap = snapshot(f.state);
    expect_refused(&c, &r, "version", (const char *const[]){"the state was written by llmq 0.0.9 (build ", "this is llmq 0.1.0"}, 2);
    copy_file(save, path);

    /* A state another run holds. */
    free(snap);
    c.snap = snap = snapshot(f.state);
    int fd = open(f.state, O_RDONLY | O_DIRECTORY);
    cr_assert(fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) == 0);
    expect_refused(&c, &r, "locked", (const char *const[]){"another llmq quantize run writing the same output holds it"}, 1);
    close(fd);

    /* Put back as it was, the state resumes to the uninterrupted run's bytes. */
    r.state = LLMQ_STATE_RESUME;
    r.stop_after = 0;
    llmq_quant_report rep;
    cr_assert_eq(quantize(&r, f.out, &rep), LLMQ_OK, "%s", llmq_last_error());
    cr_expect_eq(rep.resumed_layers, 2);
    llmq_quant_report_free(&rep);
    expect_same_file(f.ref, f.out, "resumed after the refusals");
    free(snap);
    fixture_close(&f);
}

/* ------------------------------------------------------------ CLI */

static char *read_fd(int fd)
{
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    ssize_t got;
    while ((got = read(fd, buf + n, cap - n - 1)) > 0) {
        n += (size_t)got;
        if (n + 1 == cap) buf = realloc(buf, cap *= 2);
    }
    buf[n] = 0;
    return buf;
}

/* Runs argv; when kill_when names a file, SIGKILLs the process as soon as it
 * exists (polled every millisecond). Returns the exit status (-9 when killed)
 * and stdout+stderr in *out. */
static int run_cli(char *const argv[], const char *kill_when, char **out)
{
    int fds[2];
    cr_assert_eq(pipe(fds), 0);
    fflush(NULL);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        dup2(fds[1], 1);
        dup2(fds[1], 2);
        close(fds[0]);
        close(fds[1]);
        execv(argv[0], argv);
        _exit(127);
    }
    close(fds[1]);
    int status = 0;
    if (kill_when) {
        for (;;) {
            if (exists(kill_when)) {
                kill(pid, SIGKILL);
                break;
            }
            if (waitpid(pid, &status, WNOHANG) == pid) {
                char *text = read_fd(fds[0]);
                close(fds[0]);
                cr_assert_fail("the run ended before %s appeared: %s", kill_when, text);
            }
            usleep(1000);
        }
    }
    char *text = read_fd(fds[0]);
    close(fds[0]);
    waitpid(pid, &status, 0);
    if (out) *out = text;
    else free(text);
    return WIFSIGNALED(status) ? -WTERMSIG(status) : WEXITSTATUS(status);
}

/* `llmq quantize` killed with SIGKILL at several points (before its first
 * layer finished, after the first, after the third) and run again with
 * --resume: byte-identical to an uninterrupted run, with resumed_from_layer in
 * --json and the notice on stderr; a changed --type is refused (exit 1, one
 * line), leaving the state as it was. 16 × 512 calibration tokens on one
 * thread make a layer last long enough for the kills to land where meant. */
Test(resume_cli, sigkill_at_several_points_then_resume_is_byte_identical, .timeout = 600)
{
    char bin[600], dir[256], model[300], calib[400], ref[400], out[400], state[420], kill_at[500];
    test_llmq_binary(bin, sizeof bin);
    demo_dir(dir, sizeof dir, "resume-cli");
    snprintf(model, sizeof model, "%s/demo", dir);
    snprintf(calib, sizeof calib, "%s/calib.txt", model);
    snprintf(ref, sizeof ref, "%s/ref.gguf", dir);
    snprintf(out, sizeof out, "%s/out.gguf", dir);
    snprintf(state, sizeof state, "%s.partial", out);
#define ARGS(o, ...) {bin, "quantize", model, "-o", o, "--method", "gptq", "--calib", calib, "--calib-samples", "16", \
                      "--calib-seqlen", "512", "--threads", "1", "--json", __VA_ARGS__ NULL}
    char *text;
    char *ref_argv[] = ARGS(ref, );
    cr_assert_eq(run_cli(ref_argv, NULL, &text), 0, "%s", text);
    free(text);
    char ref_state[420];
    snprintf(ref_state, sizeof ref_state, "%s.partial", ref);
    cr_expect(!exists(ref_state), "the uninterrupted run left its state");

    char help_cmd[700];
    snprintf(help_cmd, sizeof help_cmd, "%s quantize --help | grep -c -- '--resume'", bin);
    FILE *hp = popen(help_cmd, "r");
    int count = 0;
    cr_assert_eq(fscanf(hp, "%d", &count), 1);
    pclose(hp);
    cr_expect_geq(count, 1, "--resume is not in llmq quantize --help");

    const char *points[] = {"manifest.json", "layer-00000.bin", "layer-00002.bin"};
    const int at_least[] = {0, 1, 3};
    for (int p = 0; p < 3; p++) {
        snprintf(kill_at, sizeof kill_at, "%s/%s", state, points[p]);
        char *argv[] = ARGS(out, );
        cr_assert_eq(run_cli(argv, kill_at, NULL), -SIGKILL);
        cr_expect(!exists(out), "killed at %s: something at the output", points[p]);
        cr_assert(exists(state), "killed at %s: no state", points[p]);
        int layers = layer_files(state);
        cr_expect_geq(layers, at_least[p], "killed at %s", points[p]);

        if (p == 1) { /* a changed option is refused through the CLI too */
            char *before = snapshot(state);
            char *bad[] = ARGS(out, "--resume", "--type", "q4_0", );
            cr_expect_eq(run_cli(bad, NULL, &text), 1, "%s", text);
            char want[700];
            snprintf(want, sizeof want, "llmq quantize: %s: cannot resume: --type: q4_0 now, q4_k_m in the interrupted run (run without --resume to start over)\n", state);
            const char *last = strstr(text, "llmq quantize: ");
            while (last && strstr(last + 1, "llmq quantize: ")) last = strstr(last + 1, "llmq quantize: ");
            cr_expect(last && !strcmp(last, want), "the refusal: %s", text);
            free(text);
            char *after = snapshot(state);
            cr_expect_str_eq(after, before, "the refusal changed the state");
            free(before);
            free(after);
            cr_expect(!exists(out));
        }

        char *again[] = ARGS(out, "--resume", );
        cr_assert_eq(run_cli(again, NULL, &text), 0, "%s", text);
        json_t *j = last_json_line(text);
        cr_expect_eq(json_integer_value(json_object_get(j, "resumed_from_layer")), layers, "killed at %s", points[p]);
        json_decref(j);
        char note[700];
        if (layers > 0) {
            snprintf(note, sizeof note, "llmq quantize: note: resuming after layer %d/4 (state in %s)\n", layers, state);
            cr_expect(strstr(text, note), "killed at %s: %s", points[p], text);
        }
        free(text);
        char what[80];
        snprintf(what, sizeof what, "killed at %s, resumed", points[p]);
        expect_same_file(ref, out, what);
        cr_expect(!exists(state), "%s: the state is still there", what);
        unlink(out);
    }

    /* --resume with nothing to resume: a notice, then a normal run. */
    char *fresh[] = ARGS(out, "--resume", );
    cr_assert_eq(run_cli(fresh, NULL, &text), 0, "%s", text);
    char note[700];
    snprintf(note, sizeof note, "llmq quantize: note: no state to resume from in %s: starting from the first layer\n", state);
    cr_expect(strstr(text, note), "%s", text);
    json_t *j = last_json_line(text);
    cr_expect_eq(json_integer_value(json_object_get(j, "resumed_from_layer")), 0);
    json_decref(j);
    free(text);
    expect_same_file(ref, out, "--resume without a state");
#undef ARGS
}
