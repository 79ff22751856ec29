/*
 * insn_count: a QEMU TCG plugin (plugin API v1, QEMU 7.2) that counts the
 * guest instructions a program retires, in total and by class, for aarch64.
 *
 * Counting is per translated block: at translation each instruction is
 * classified once (by its encoding, and optionally by the disassembler's
 * mnemonic), and the block adds its per-class counts with inline operations
 * whenever it runs, so the cost at run time is a few adds per block. A block
 * left early (a fault, a syscall that does not return) is still counted in
 * full: negligible for user-mode programs. Counters are plain, not atomic:
 * use it on single-threaded work (other threads' counts may race).
 *
 * Arguments (-plugin ./libinsn_count.so,ARG,...):
 *   mnemonics=on   also count by the disassembler's mnemonic (top 40 printed)
 * Output goes through qemu's log: run with `-d plugin -D FILE`.
 *
 * Built by tools/arm/build_qemu_plugin.sh against the qemu-plugin.h of the
 * installed qemu's source package.
 */
#include <glib.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <qemu-plugin.h>

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

typedef struct {
    const char *name;
    uint32_t mask;
    uint32_t pattern;
    uint64_t count;
} Class;

/* First match wins: the precise encodings before the broad groups. */
static Class classes[] = {
    /* int8 dot products (ARMv8.2 DotProd), vector and by element */
    {"sdot/udot (vector)", 0x9fe0fc00, 0x0e809400, 0},
    {"sdot/udot (element)", 0x9fc0f400, 0x0f80e000, 0},
    /* widening integer multiply(-accumulate): smlal/umlal/smlsl, smull/umull */
    {"s/umlal,s/umlsl (vector)", 0x9f20dc00, 0x0e208000, 0},
    {"s/umull (vector)", 0x9f20fc00, 0x0e20c000, 0},
    {"s/umlal,s/umlsl (element)", 0x9f00b400, 0x0f002000, 0},
    {"s/umull (element)", 0x9f00f400, 0x0f00a000, 0},
    /* integer multiply(-accumulate), not widening: mul/mla/mls */
    {"mul/mla/mls (vector)", 0x9f20f400, 0x0e209400, 0},
    {"mla/mls (element)", 0xbf00b400, 0x2f000000, 0},
    {"mul (element)", 0xbf00f400, 0x0f008000, 0},
    /* f32/f64 fused multiply-add and multiply */
    {"fmla/fmls (vector)", 0xbf20fc00, 0x0e20cc00, 0},
    {"fmla/fmls (element)", 0xbf80b400, 0x0f801000, 0},
    {"fmul (vector)", 0xbfa0fc00, 0x2e20dc00, 0},
    {"fmul (element)", 0xbf80f400, 0x0f809000, 0},
    {"fmadd/fmsub (scalar)", 0xff200000, 0x1f000000, 0},
    /* everything else, by the top-level groups of the A64 encoding */
    {"other SIMD&FP data processing", 0x0e000000, 0x0e000000, 0},
    {"loads and stores", 0x0a000000, 0x08000000, 0},
    {"branches, exceptions, system", 0x1c000000, 0x14000000, 0},
    {"other (integer data processing)", 0x00000000, 0x00000000, 0},
};
#define N_CLASSES (sizeof(classes) / sizeof(classes[0]))

static uint64_t total;
static bool do_mnemonics;
static GHashTable *mnemonics; /* char* -> uint64_t* */
static GMutex lock;

static int class_of(uint32_t op)
{
    for (size_t i = 0; i < N_CLASSES; i++) {
        if ((op & classes[i].mask) == classes[i].pattern) {
            return (int)i;
        }
    }
    return (int)N_CLASSES - 1;
}

static uint64_t *mnemonic_counter(const char *disas)
{
    size_t n = strcspn(disas, " \t");
    g_autofree char *key = g_strndup(disas, n);
    uint64_t *c = g_hash_table_lookup(mnemonics, key);
    if (!c) {
        c = g_new0(uint64_t, 1);
        g_hash_table_insert(mnemonics, g_strdup(key), c);
    }
    return c;
}

static void tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    size_t n = qemu_plugin_tb_n_insns(tb);
    uint64_t per_class[N_CLASSES] = {0};
    g_autoptr(GHashTable) per_mn = NULL;

    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64,
                                             &total, n);
    if (do_mnemonics) {
        per_mn = g_hash_table_new(NULL, NULL);
    }
    g_mutex_lock(&lock);
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        uint32_t op = 0;
        if (qemu_plugin_insn_size(insn) == 4) {
            memcpy(&op, qemu_plugin_insn_data(insn), 4);
        }
        per_class[class_of(op)]++;
        if (do_mnemonics) {
            g_autofree char *d = qemu_plugin_insn_disas(insn);
            uint64_t *c = mnemonic_counter(d ? d : "?");
            gpointer k = c;
            g_hash_table_insert(
                per_mn, k,
                GUINT_TO_POINTER(GPOINTER_TO_UINT(g_hash_table_lookup(per_mn, k)) + 1));
        }
    }
    g_mutex_unlock(&lock);
    for (size_t c = 0; c < N_CLASSES; c++) {
        if (per_class[c]) {
            qemu_plugin_register_vcpu_tb_exec_inline(
                tb, QEMU_PLUGIN_INLINE_ADD_U64, &classes[c].count, per_class[c]);
        }
    }
    if (do_mnemonics) {
        GHashTableIter it;
        gpointer k, v;
        g_hash_table_iter_init(&it, per_mn);
        while (g_hash_table_iter_next(&it, &k, &v)) {
            qemu_plugin_register_vcpu_tb_exec_inline(
                tb, QEMU_PLUGIN_INLINE_ADD_U64, k, GPOINTER_TO_UINT(v));
        }
    }
}

typedef struct {
    const char *name;
    uint64_t count;
} Row;

static gint by_count(gconstpointer a, gconstpointer b)
{
    const Row *x = a, *y = b;
    return x->count < y->count ? 1 : (x->count > y->count ? -1 : 0);
}

static void plugin_exit(qemu_plugin_id_t id, void *p)
{
    g_autoptr(GString) out = g_string_new(NULL);
    g_string_append_printf(out, "insn_count total %" PRIu64 "\n", total);
    for (size_t c = 0; c < N_CLASSES; c++) {
        g_string_append_printf(out, "insn_count class %" PRIu64 " %s\n",
                               classes[c].count, classes[c].name);
    }
    if (do_mnemonics) {
        g_autoptr(GArray) rows = g_array_new(false, false, sizeof(Row));
        GHashTableIter it;
        gpointer k, v;
        g_hash_table_iter_init(&it, mnemonics);
        while (g_hash_table_iter_next(&it, &k, &v)) {
            Row r = {k, *(uint64_t *)v};
            g_array_append_val(rows, r);
        }
        g_array_sort(rows, by_count);
        for (guint i = 0; i < rows->len && i < 40; i++) {
            Row *r = &g_array_index(rows, Row, i);
            g_string_append_printf(out, "insn_count mnemonic %" PRIu64 " %s\n",
                                   r->count, r->name);
        }
    }
    qemu_plugin_outs(out->str);
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id,
                                           const qemu_info_t *info, int argc,
                                           char **argv)
{
    for (int i = 0; i < argc; i++) {
        g_auto(GStrv) kv = g_strsplit(argv[i], "=", 2);
        if (g_strcmp0(kv[0], "mnemonics") == 0 && kv[1]) {
            if (!qemu_plugin_bool_parse(kv[0], kv[1], &do_mnemonics)) {
                fprintf(stderr, "insn_count: bad value: %s\n", argv[i]);
                return -1;
            }
        } else {
            fprintf(stderr, "insn_count: unknown argument: %s\n", argv[i]);
            return -1;
        }
    }
    if (strcmp(info->target_name, "aarch64") != 0) {
        fprintf(stderr, "insn_count: classes are for aarch64, not %s\n",
                info->target_name);
        return -1;
    }
    mnemonics = g_hash_table_new(g_str_hash, g_str_equal);
    qemu_plugin_register_vcpu_tb_trans_cb(id, tb_trans);
    qemu_plugin_register_atexit_cb(id, plugin_exit, NULL);
    return 0;
}
