/* The exec stub: a tiny static program, run from a sealed memfd, whose only job is
   execve(argv[0], argv + 1, envp). The container's payload is executed by it, so at that
   moment /proc/self/exe is the sealed stub, never the host's racker binary (CVE-2019-5736:
   a payload like "#!/proc/self/exe" could otherwise reach the host binary and overwrite it). */
#if defined(__x86_64__)
        .text
        .globl _start
_start:
        mov     (%rsp), %rcx            /* argc */
        mov     8(%rsp), %rdi           /* path = argv[0] */
        lea     16(%rsp), %rsi          /* argv + 1 */
        lea     16(%rsp,%rcx,8), %rdx   /* envp = &argv[argc + 1] */
        mov     $59, %eax               /* execve */
        syscall
        mov     $127, %edi
        mov     $231, %eax              /* exit_group */
        syscall
#elif defined(__aarch64__)
        .text
        .globl _start
_start:
        ldr     x9, [sp]
        ldr     x0, [sp, #8]
        add     x1, sp, #16
        add     x2, sp, #16
        add     x2, x2, x9, lsl #3
        mov     x8, #221                /* execve */
        svc     #0
        mov     x0, #127
        mov     x8, #94                 /* exit_group */
        svc     #0
#else
#error "exec stub: unsupported architecture"
#endif
        .section .note.GNU-stack,"",%progbits
