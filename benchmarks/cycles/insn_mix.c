/* A QEMU 7.2 TCG plugin (API version 1) for benchmarks/cycles: counts the instructions a firmware executes
 * between its fw_window_open() and fw_window_close() calls (tinyopt/mcu/firmware/semihost.h), by class (from
 * each instruction's disassembly), the registers that load/store-multiple instructions move, and the branches
 * taken, so that a core's timing table can turn them into an estimated cycle count (estimate.py).
 *
 *   qemu-system-arm ... -plugin ./insn_mix.so,open=0x<addr>,close=0x<addr>,out=<file>
 *
 * Writes one line to <file> at exit: "<class>=<count> ...". Debian's QEMU ships no qemu-plugin.h; the few
 * declarations below are API version 1's. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;
struct qemu_plugin_insn;
enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_CB_R_REGS, QEMU_PLUGIN_CB_RW_REGS };
typedef void (*tb_trans_cb)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*vcpu_udata_cb)(unsigned int vcpu_index, void *userdata);
typedef void (*udata_cb)(qemu_plugin_id_t id, void *userdata);
void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, tb_trans_cb cb);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb *tb);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);
char *qemu_plugin_insn_disas(const struct qemu_plugin_insn *insn);
uint64_t qemu_plugin_insn_vaddr(const struct qemu_plugin_insn *insn);
size_t qemu_plugin_insn_size(const struct qemu_plugin_insn *insn);
void qemu_plugin_register_vcpu_tb_exec_cb(struct qemu_plugin_tb *tb, vcpu_udata_cb cb,
                                          enum qemu_plugin_cb_flags flags, void *userdata);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, udata_cb cb, void *userdata);
void qemu_plugin_outs(const char *string);
__attribute__((visibility("default"))) int qemu_plugin_version = 1;


/* Instruction classes; estimate.py names them in the same order. A load or store single that directly follows
 * another in straight-line code is counted apart: on the Cortex-M4 the pair pipelines. */
enum {
  ALU, MUL, DIV, LOAD, LOAD_NEXT, STORE, STORE_NEXT, DOUBLE, MULTI, MULTI_REGS, BRANCH, TAKEN, IT,
  FP_MAC, FP_DIV, FP_MEM, FP, VECTOR, CLASSES
};
static const char *const NAMES[CLASSES] = {
    "alu", "mul", "div", "load", "load_next", "store", "store_next", "double", "multi", "multi_regs",
    "branch", "taken", "it", "fp_mac", "fp_div", "fp_mem", "fp", "vector"};

typedef struct {
  uint64_t start, fallthrough;
  int ends_in_branch, opens, closes;
  uint32_t count[CLASSES];
} Block;

static uint64_t open_at, close_at, totals[CLASSES];
static const char *out_path = "mix.txt";
static int counting;
static const Block *previous;

static int starts(const char *s, const char *prefix) { return strncmp(s, prefix, strlen(prefix)) == 0; }

static int any(const char *mnemonic, const char *const *prefixes) {
  for (; *prefixes; prefixes++)
    if (starts(mnemonic, *prefixes)) return 1;
  return 0;
}

static int registers_in(const char *text) { /* "{r4, r5, pc}": the count of listed registers */
  const char *brace = strchr(text, '{');
  if (!brace) return 1;
  int n = 1;
  for (const char *c = brace; *c && *c != '}'; c++) n += *c == ',';
  return n;
}

static int writes_pc(const char *mnemonic, const char *operands) {
  if (starts(mnemonic, "pop") || starts(mnemonic, "ldm")) return strstr(operands, "pc}") != NULL;
  return starts(operands, "pc,");
}

/* The class of one instruction, from its disassembly ("mnemonic operands"); *moved gets the registers of a
 * load/store multiple. */
static int classify(const char *text, int *moved, int *is_branch) {
  static const char *const mul[] = {"mul", "mla", "mls", "smul", "smla", "smls", "smmul", "smmla", "smmls", "umul",
                                    "umla", "umaal", "smuad", "smusd", "usad8", "usada8", 0};
  static const char *const multi[] = {"ldm", "stm", "push", "pop", "vpush", "vpop", "vldm", "vstm", 0};
  static const char *const fp_mac[] = {"vmla.f", "vmls.f", "vfma.f", "vfms.f", "vnmla.f", "vnmls.f", "vfnma.f",
                                       "vfnms.f", 0};
  char mnemonic[32];
  const char *space = strchr(text, ' ');
  size_t n = space ? (size_t)(space - text) : strlen(text);
  if (n >= sizeof mnemonic) n = sizeof mnemonic - 1;
  memcpy(mnemonic, text, n);
  mnemonic[n] = 0;
  const char *operands = space ? space + 1 : "";
  *moved = 0;
  *is_branch = 0;
  if (any(mnemonic, multi)) {
    *moved = registers_in(operands);
    *is_branch = writes_pc(mnemonic, operands);
    return MULTI;
  }
  if (mnemonic[0] == 'b' && !starts(mnemonic, "bic") && !starts(mnemonic, "bfc") && !starts(mnemonic, "bfi") &&
      !starts(mnemonic, "bkpt")) {
    *is_branch = 1;
    return BRANCH;
  }
  if (starts(mnemonic, "cbz") || starts(mnemonic, "cbnz") || starts(mnemonic, "tbb") || starts(mnemonic, "tbh") ||
      starts(mnemonic, "le") || starts(mnemonic, "wls") || starts(mnemonic, "dls")) {
    *is_branch = 1;
    return BRANCH;
  }
  if (starts(mnemonic, "it")) return IT;
  if (starts(mnemonic, "ldrd") || starts(mnemonic, "strd")) return DOUBLE;
  if (starts(mnemonic, "ldr")) {
    *is_branch = writes_pc(mnemonic, operands);
    return LOAD;
  }
  if (starts(mnemonic, "str")) return STORE;
  if (starts(mnemonic, "sdiv") || starts(mnemonic, "udiv")) return DIV;
  if (any(mnemonic, mul)) return MUL;
  if (mnemonic[0] == 'v') {
    if (any(mnemonic, fp_mac)) return FP_MAC;
    if (starts(mnemonic, "vdiv") || starts(mnemonic, "vsqrt")) return FP_DIV;
    if (starts(mnemonic, "vldr") || starts(mnemonic, "vstr")) return strstr(operands, "q") ? VECTOR : FP_MEM;
    return strstr(operands, "q") ? VECTOR : FP; /* an MVE instruction names q registers */
  }
  if (starts(mnemonic, "mov") || starts(mnemonic, "add")) *is_branch = writes_pc(mnemonic, operands);
  return ALU;
}

static void on_exec(unsigned int vcpu, void *data) {
  (void)vcpu;
  const Block *b = data;
  if (b->opens) counting = 1;
  if (b->closes) counting = 0;
  if (counting) {
    for (int c = 0; c < CLASSES; c++) totals[c] += b->count[c];
    if (previous && previous->ends_in_branch && b->start != previous->fallthrough) totals[TAKEN]++;
  }
  previous = b;
}

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
  (void)id;
  Block *b = calloc(1, sizeof *b);
  size_t n = qemu_plugin_tb_n_insns(tb);
  int last = -1;
  b->start = qemu_plugin_tb_vaddr(tb);
  for (size_t i = 0; i < n; i++) {
    struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
    char *text = qemu_plugin_insn_disas(insn);
    int moved, is_branch, c = classify(text, &moved, &is_branch);
    free(text);
    if ((c == LOAD || c == STORE) && (last == LOAD || last == STORE || last == LOAD_NEXT || last == STORE_NEXT))
      c = c == LOAD ? LOAD_NEXT : STORE_NEXT;
    b->count[c]++;
    b->count[MULTI_REGS] += (uint32_t)moved;
    last = c;
    if (i + 1 == n) {
      b->ends_in_branch = is_branch;
      b->fallthrough = qemu_plugin_insn_vaddr(insn) + qemu_plugin_insn_size(insn);
    }
  }
  b->opens = open_at && b->start == open_at;
  b->closes = close_at && b->start == close_at;
  qemu_plugin_register_vcpu_tb_exec_cb(tb, on_exec, QEMU_PLUGIN_CB_NO_REGS, b);
}

static void write_totals(qemu_plugin_id_t id, void *data) {
  (void)id;
  (void)data;
  FILE *f = fopen(out_path, "w");
  if (!f) return;
  for (int c = 0; c < CLASSES; c++) fprintf(f, "%s=%llu%s", NAMES[c], (unsigned long long)totals[c], c + 1 < CLASSES ? " " : "\n");
  fclose(f);
}

__attribute__((visibility("default"))) int qemu_plugin_install(qemu_plugin_id_t id, const void *info, int argc,
                                                               char **argv) {
  (void)info;
  for (int i = 0; i < argc; i++) {
    if (starts(argv[i], "open=")) open_at = strtoull(argv[i] + 5, NULL, 0) & ~1ull;
    if (starts(argv[i], "close=")) close_at = strtoull(argv[i] + 6, NULL, 0) & ~1ull;
    if (starts(argv[i], "out=")) out_path = argv[i] + 4;
  }
  qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
  qemu_plugin_register_atexit_cb(id, write_totals, NULL);
  return 0;
}
