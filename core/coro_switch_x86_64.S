/*
 * Context switch for x86_64 (System V ABI). See core/coro.c.
 *
 * void coro_switch_ctx(void **save_sp, void *load_sp)
 *   Pushes the callee-saved registers (rbp, rbx, r12-r15), stores rsp in
 *   *save_sp, switches to load_sp and pops the same frame from there.
 *   No system call, no signal mask: that is what makes it cheap.
 *
 *   MXCSR and the x87 control word: by default they are NOT switched; the
 *   floating-point control state belongs to the thread, shared by its
 *   coroutines, as Go's scheduler does. A coroutine that changes the
 *   rounding mode or exception masks must restore them before it yields
 *   (the same discipline fesetround() asks of any function). Reading MXCSR
 *   alone (stmxcsr) costs ~2 ns per switch on this machine's CPUs, a fifth
 *   of the 10 ns budget. Build with -DCORO_SAVE_FPU to give every coroutine
 *   its own control bits, as Boost.Context does (loaded only when they
 *   differ from the current ones).
 *
 * coro_trampoline: first "return address" of a new coroutine. coro.c builds
 *   the initial frame with r12 = the coroutine and r13 = the C entry
 *   function, which never returns.
 */
#if defined(__x86_64__)
    .text
    .globl  coro_switch_ctx
    .hidden coro_switch_ctx
    .type   coro_switch_ctx, @function
    .p2align 4
coro_switch_ctx:
    pushq   %rbp
    pushq   %rbx
    pushq   %r12
    pushq   %r13
    pushq   %r14
    pushq   %r15
#if defined(CORO_SAVE_FPU)
    pushq   $0                  /* [mxcsr:32][x87 cw:16][0:16] */
    stmxcsr (%rsp)
    fnstcw  4(%rsp)
    movq    (%rsp), %rax
#endif
    movq    %rsp, (%rdi)
    movq    %rsi, %rsp
#if defined(CORO_SAVE_FPU)
    /* ldmxcsr + fldcw cost more than the rest of the switch, and nearly
     * every context runs with the same control bits: load them only when
     * they differ. The low 6 bits of MXCSR are sticky status flags,
     * caller-saved in the ABI, so they are left out of the comparison. */
    movq    (%rsp), %rcx
    xorq    %rax, %rcx
    andq    $-64, %rcx
    jnz     1f
2:
    addq    $8, %rsp
#endif
    popq    %r15
    popq    %r14
    popq    %r13
    popq    %r12
    popq    %rbx
    popq    %rbp
    ret
#if defined(CORO_SAVE_FPU)
1:
    ldmxcsr (%rsp)
    fldcw   4(%rsp)
    jmp     2b
#endif
    .size   coro_switch_ctx, .-coro_switch_ctx

    .globl  coro_trampoline
    .hidden coro_trampoline
    .type   coro_trampoline, @function
    .p2align 4
coro_trampoline:
    movq    %r12, %rdi
    callq   *%r13
    ud2
    .size   coro_trampoline, .-coro_trampoline
#endif

#if defined(__linux__) && defined(__ELF__)
    .section .note.GNU-stack, "", %progbits
#endif
