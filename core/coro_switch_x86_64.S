/*
 * Context switch for x86_64 (System V ABI). See core/coro.c.
 *
 * void coro_switch_ctx(void **save_sp, void *load_sp)
 *   Pushes the callee-saved registers (rbp, rbx, r12-r15) and the control
 *   bits of MXCSR and the x87 control word (both callee-saved in the ABI, so
 *   a coroutine that changes its rounding mode keeps it to itself), stores
 *   rsp in *save_sp, switches to load_sp and pops the same frame from there.
 *   No system call, no signal mask: that is what makes it cheap.
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
    subq    $8, %rsp
    stmxcsr (%rsp)
    fnstcw  4(%rsp)
    movq    %rsp, (%rdi)
    movq    %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw   4(%rsp)
    addq    $8, %rsp
    popq    %r15
    popq    %r14
    popq    %r13
    popq    %r12
    popq    %rbx
    popq    %rbp
    ret
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
