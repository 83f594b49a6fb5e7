/* The exec stub: a tiny static program, run from a sealed memfd, whose only job is
   execve(argv[1], argv + 2, envp). The container's payload is executed by it, so at that
   moment /proc/self/exe is the sealed stub, never the host's racker binary (CVE-2019-5736:
   a payload like "#!/proc/self/exe" could otherwise reach the host binary and overwrite it).
   argv[0] must be "racker-exec-stub": run as a script's interpreter (argv[0] is then the
   shebang's path) it exits 126 instead of executing the script again, forever. */
#if defined(__x86_64__)
        .text
        .globl _start
_start:
        mov     8(%rsp), %rsi           /* argv[0] */
        lea     marker(%rip), %rdi
1:      movb    (%rdi), %al
        cmpb    (%rsi), %al
        jne     refuse
        inc     %rdi
        inc     %rsi
        testb   %al, %al
        jnz     1b
        mov     (%rsp), %rcx            /* argc */
        cmp     $2, %rcx
        jb      refuse
        mov     16(%rsp), %rdi          /* path = argv[1] */
        lea     24(%rsp), %rsi          /* argv + 2 */
        lea     16(%rsp,%rcx,8), %rdx   /* envp = &argv[argc + 1] */
        mov     $59, %eax               /* execve */
        syscall
        mov     $127, %edi
        jmp     out
refuse: mov     $126, %edi
out:    mov     $231, %eax              /* exit_group */
        syscall
#elif defined(__aarch64__)
        .text
        .globl _start
_start:
        ldr     x1, [sp, #8]            /* argv[0] */
        adr     x0, marker
1:      ldrb    w2, [x0], #1
        ldrb    w3, [x1], #1
        cmp     w2, w3
        b.ne    refuse
        cbnz    w2, 1b
        ldr     x9, [sp]                /* argc */
        cmp     x9, #2
        b.lo    refuse
        ldr     x0, [sp, #16]           /* argv[1] */
        add     x1, sp, #24             /* argv + 2 */
        add     x2, sp, #16
        add     x2, x2, x9, lsl #3      /* envp */
        mov     x8, #221                /* execve */
        svc     #0
        mov     x0, #127
        b       out
refuse: mov     x0, #126
out:    mov     x8, #94                 /* exit_group */
        svc     #0
#else
#error "exec stub: unsupported architecture"
#endif
        .section .rodata
marker: .asciz  "racker-exec-stub"
        .section .note.GNU-stack,"",%progbits
