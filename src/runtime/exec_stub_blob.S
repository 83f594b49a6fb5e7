/* The linked exec stub (see exec_stub.S), embedded as bytes. */
        .section .rodata
        .globl racker_exec_stub
        .globl racker_exec_stub_end
        .balign 16
racker_exec_stub:
        .incbin RACKER_EXEC_STUB_PATH
racker_exec_stub_end:
        .section .note.GNU-stack,"",%progbits
