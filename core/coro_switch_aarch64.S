/*
 * Context switch for aarch64 (AAPCS64). See core/coro.c.
 *
 * void coro_switch_ctx(void **save_sp, void *load_sp)
 *   Saves the callee-saved registers x19-x28, fp (x29), lr (x30) and the low
 *   halves of v8-v15 (d8-d15) in a 160-byte frame on the current stack,
 *   stores sp in *save_sp, switches to load_sp, restores the same frame
 *   from there and returns through the restored lr.
 *
 * coro_trampoline: the first lr of a new coroutine. coro.c builds the
 *   initial frame with x19 = the coroutine and x20 = the C entry function,
 *   which never returns.
 */
#if defined(__aarch64__)
    .text
    .globl  coro_switch_ctx
    .hidden coro_switch_ctx
    .type   coro_switch_ctx, %function
    .p2align 4
coro_switch_ctx:
    sub     sp, sp, #160
    stp     d8, d9, [sp, #0]
    stp     d10, d11, [sp, #16]
    stp     d12, d13, [sp, #32]
    stp     d14, d15, [sp, #48]
    stp     x19, x20, [sp, #64]
    stp     x21, x22, [sp, #80]
    stp     x23, x24, [sp, #96]
    stp     x25, x26, [sp, #112]
    stp     x27, x28, [sp, #128]
    stp     x29, x30, [sp, #144]
    mov     x9, sp
    str     x9, [x0]
    mov     sp, x1
    ldp     d8, d9, [sp, #0]
    ldp     d10, d11, [sp, #16]
    ldp     d12, d13, [sp, #32]
    ldp     d14, d15, [sp, #48]
    ldp     x19, x20, [sp, #64]
    ldp     x21, x22, [sp, #80]
    ldp     x23, x24, [sp, #96]
    ldp     x25, x26, [sp, #112]
    ldp     x27, x28, [sp, #128]
    ldp     x29, x30, [sp, #144]
    add     sp, sp, #160
    ret
    .size   coro_switch_ctx, .-coro_switch_ctx

    .globl  coro_trampoline
    .hidden coro_trampoline
    .type   coro_trampoline, %function
    .p2align 4
coro_trampoline:
    mov     x0, x19
    blr     x20
    brk     #0
    .size   coro_trampoline, .-coro_trampoline
#endif

#if defined(__linux__) && defined(__ELF__)
    .section .note.GNU-stack, "", %progbits
#endif
