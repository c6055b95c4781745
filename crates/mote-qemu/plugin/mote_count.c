/*
 * mote_count: a QEMU TCG plugin that counts executed guest instructions and reports the running count at
 * each call of the firmware's marker function.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 * (It is built against QEMU's GPL-2.0-or-later qemu-plugin.h and loaded into QEMU; see COPYING.GPL-2.0.)
 *
 * Arguments (-plugin libmote_count.so,mark=0x...,reg=r0,out=PATH):
 *   mark  address of the marker's first instruction (Thumb bit cleared); 0 or absent: count only
 *   reg   name of the register holding the mark id at that instruction (QEMU's gdb name: r0, a0)
 *   out   file to write the report to (default: QEMU's plugin log, i.e. stderr)
 *
 * Report lines:
 *   mark <id> <count>   one per marker call, in execution order; count = instructions executed before
 *                       the marker's first instruction
 *   total <count>       at QEMU exit: all instructions executed
 *
 * Counting is exact: every instruction of every translated block gets an inline per-vCPU add, so a
 * block left early (an exception, a semihosting call) counts only what ran.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <glib.h>

#include "qemu-plugin.h"

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

static qemu_plugin_u64 insns;       /* per-vCPU instruction counter */
static uint64_t mark_addr;          /* 0: no marker */
static const char *reg_name = "r0";
static struct qemu_plugin_register *reg_handle; /* same handle on every vCPU of one CPU model */
static FILE *out;
static GMutex out_lock;

static void report(const char *line)
{
    g_mutex_lock(&out_lock);
    if (out) {
        fputs(line, out);
        /* Flushed per line: a run killed at its timeout still leaves the marks it reached. */
        fflush(out);
    } else {
        qemu_plugin_outs(line);
    }
    g_mutex_unlock(&out_lock);
}

static void vcpu_init(qemu_plugin_id_t id, unsigned int vcpu_index)
{
    /* Registers can only be listed from a vCPU context, hence here and not in qemu_plugin_install. */
    g_autoptr(GArray) regs = qemu_plugin_get_registers();
    for (guint i = 0; regs && i < regs->len; i++) {
        qemu_plugin_reg_descriptor *rd = &g_array_index(regs, qemu_plugin_reg_descriptor, i);
        if (strcmp(rd->name, reg_name) == 0) {
            reg_handle = rd->handle;
        }
    }
    if (mark_addr && !reg_handle) {
        report("mote_count: error: register not found\n");
    }
}

static void on_mark(unsigned int vcpu_index, void *udata)
{
    uint64_t count = qemu_plugin_u64_get(insns, vcpu_index);
    uint32_t id = 0;
    if (reg_handle) {
        g_autoptr(GByteArray) buf = g_byte_array_new();
        int n = qemu_plugin_read_register(reg_handle, buf);
        /* Guest registers come in target byte order; all our targets are little-endian. */
        for (int i = n < 4 ? n - 1 : 3; i >= 0; i--) {
            id = (id << 8) | buf->data[i];
        }
    }
    g_autofree char *line = g_strdup_printf("mark %" PRIu32 " %" PRIu64 "\n", id, count);
    report(line);
}

static void tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    size_t n = qemu_plugin_tb_n_insns(tb);
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        if (mark_addr && qemu_plugin_insn_vaddr(insn) == mark_addr) {
            /* Registered before the add: the count it reads excludes the marker's first instruction. */
            qemu_plugin_register_vcpu_insn_exec_cb(insn, on_mark, QEMU_PLUGIN_CB_R_REGS, NULL);
        }
        qemu_plugin_register_vcpu_insn_exec_inline_per_vcpu(insn, QEMU_PLUGIN_INLINE_ADD_U64, insns, 1);
    }
}

static void report_total(qemu_plugin_id_t id, void *udata)
{
    g_autofree char *line = g_strdup_printf("total %" PRIu64 "\n", qemu_plugin_u64_sum(insns));
    report(line);
    g_mutex_lock(&out_lock);
    if (out) {
        fclose(out);
        out = NULL;
    }
    g_mutex_unlock(&out_lock);
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc,
                                           char **argv)
{
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (g_str_has_prefix(a, "mark=")) {
            mark_addr = g_ascii_strtoull(a + 5, NULL, 0);
        } else if (g_str_has_prefix(a, "reg=")) {
            reg_name = a + 4;
        } else if (g_str_has_prefix(a, "out=")) {
            out = fopen(a + 4, "w");
            if (!out) {
                fprintf(stderr, "mote_count: cannot open %s\n", a + 4);
                return -1;
            }
        } else {
            fprintf(stderr, "mote_count: unknown argument %s\n", a);
            return -1;
        }
    }
    insns = qemu_plugin_scoreboard_u64(qemu_plugin_scoreboard_new(sizeof(uint64_t)));
    qemu_plugin_register_vcpu_init_cb(id, vcpu_init);
    qemu_plugin_register_vcpu_tb_trans_cb(id, tb_trans);
    qemu_plugin_register_atexit_cb(id, report_total, NULL);
    return 0;
}
