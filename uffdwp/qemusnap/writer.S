/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * uffdwp's QEMU guest: a boot sector that keeps writing to every page of guest RAM from START to
 * END, one pass after another, and times each page's stores with rdtsc.
 *
 * The order within a pass is a fixed permutation: page offsets 0, STRIDE, 2*STRIDE, ... modulo
 * SIZE (STRIDE is a page multiple whose page count is coprime with SIZE's, so a pass visits every
 * page once and ends back at offset 0). Not ascending, so that a copy made in address order
 * while the writer runs (a dump, a linear scan without write tracking) cannot pass for a cut.
 *
 * Page i of pass p (p = 1, 2, ...) gets, in this order:
 *     offset 0:    p          (head)
 *     offset 4:    the page's own physical address (tag)
 *     offset 4092: p          (tail)
 * so a consistent cut of the sequence is: every page written at least once, head == tail and the
 * tag right on every page, and, in the writer's order, the pass numbers read k on a prefix of
 * the pages and k-1 on the rest (one increment boundary).
 *
 * The status page STATUS (below the boot sector, never part of the pattern) holds:
 *     +0x00 magic MAGIC, +0x04 passes completed, +0x08 rdtsc after the latest page (u64),
 *     +0x10 START, +0x14 END, +0x18 STRIDE,
 *     +0x20 rdtsc ticks in PIT_LATCH periods of the 8254 (the shortest of 3), +0x24 PIT_LATCH,
 *     +0x100 hist[65]: u32 counts of page-store stalls in rdtsc ticks, log2 buckets
 *            (bucket 0: 0 ticks; bucket b >= 1: [2^(b-1), 2^b) ticks)
 * START, END, SIZE (END - START), STRIDE, PIT_LATCH, STATUS and MAGIC come from the assembler's
 * command line (--defsym), set by uffdwp/qemusnap/bootblock.py, which also reads this layout.
 *
 * Assemble: as --32 --defsym START=... -o w.o writer.S; ld -m elf_i386 -Ttext=0x7c00
 * --oformat=binary -o boot.img w.o
 */
        .code16
        .text
        .globl _start
_start:
        cli
        /* Mask every IRQ at both 8259s. With IF clear a timer interrupt would stay pending,
         * and TCG's vCPU takes QEMU's big lock for a pending interrupt at every exit from its
         * translated code: the writer would stall whenever the main loop holds that lock
         * (e.g. for a QMP pmemsave), and such a dump would look like a cut. */
        movb    $0xff, %al
        outb    %al, $0x21
        outb    %al, $0xa1
        xorw    %ax, %ax
        movw    %ax, %ds
        movw    %ax, %ss
        movw    $0x7c00, %sp
        inb     $0x92, %al              /* fast A20 gate */
        orb     $2, %al
        andb    $0xfe, %al
        outb    %al, $0x92
        lgdt    gdt_desc
        movl    %cr0, %eax
        orl     $1, %eax
        movl    %eax, %cr0
        ljmp    $0x08, $pm32

        .code32
pm32:
        movw    $0x10, %ax
        movw    %ax, %ds
        movw    %ax, %es
        movw    %ax, %ss
        movw    %ax, %fs
        movw    %ax, %gs
        movl    $0x7c00, %esp
        movl    $STATUS, %edi           /* clear the status page */
        xorl    %eax, %eax
        movl    $1024, %ecx
        cld
        rep stosl
        movl    $START, STATUS + 0x10
        movl    $END, STATUS + 0x14
        movl    $STRIDE, STATUS + 0x18
        /* rdtsc ticks in PIT_LATCH periods of the 8254 (1.193182 MHz), as Linux calibrates its
         * TSC: channel 2 in mode 0, its output read at port 0x61 bit 5. Both clocks run in
         * real time under TCG, so a vCPU descheduled meanwhile does not bias the rate; only a
         * late poll does, so the shortest of three is kept. */
        movl    $3, %edi
        movl    $0xffffffff, STATUS + 0x20
calibrate:
        inb     $0x61, %al
        andb    $0xfd, %al              /* speaker off */
        orb     $0x01, %al              /* channel 2 gate on */
        outb    %al, $0x61
        movb    $0xb0, %al              /* channel 2, lobyte/hibyte, mode 0, binary */
        outb    %al, $0x43
        movb    $(PIT_LATCH & 0xff), %al
        outb    %al, $0x42
        movb    $(PIT_LATCH >> 8), %al
        outb    %al, $0x42
        rdtsc
        movl    %eax, %ebx
pit_wait:
        inb     $0x61, %al
        testb   $0x20, %al
        jz      pit_wait
        rdtsc
        subl    %ebx, %eax              /* < 2^32 ticks for 50 ms below 80 GHz */
        cmpl    STATUS + 0x20, %eax
        jae     1f
        movl    %eax, STATUS + 0x20
1:
        decl    %edi
        jnz     calibrate
        movl    $PIT_LATCH, STATUS + 0x24
        movl    $MAGIC, STATUS          /* written last: the host polls for it */
        movw    $0x3f8, %dx             /* "U" on COM1: the writer runs */
        movb    $'U', %al
        outb    %al, %dx
        xorl    %ebp, %ebp              /* %ebp: the pass being written */
next_pass:
        incl    %ebp
        xorl    %edi, %edi              /* %edi: offset of the page in the pattern */
next_page:
        leal    START(%edi), %esi
        rdtsc
        movl    %eax, %ebx
        movl    %edx, %ecx
        movl    %ebp, (%esi)
        movl    %esi, 4(%esi)
        movl    %ebp, 4092(%esi)
        rdtsc
        movl    %eax, STATUS + 0x08
        movl    %edx, STATUS + 0x0c
        subl    %ebx, %eax              /* %edx:%eax = ticks this page's stores took */
        sbbl    %ecx, %edx
        jnz     huge
        bsrl    %eax, %eax
        jz      zero
        incl    %eax
        jmp     count
zero:
        xorl    %eax, %eax
        jmp     count
huge:
        bsrl    %edx, %eax
        addl    $33, %eax
count:
        incl    STATUS + 0x100(, %eax, 4)
        addl    $STRIDE, %edi           /* next page: (offset + STRIDE) mod SIZE */
        cmpl    $SIZE, %edi
        jb      1f
        subl    $SIZE, %edi
1:
        testl   %edi, %edi              /* back at offset 0: the pass is complete */
        jnz     next_page
        movl    %ebp, STATUS + 0x04
        jmp     next_pass

        .p2align 3
gdt:
        .quad   0
        .quad   0x00cf9a000000ffff      /* 0x08: flat 32-bit code */
        .quad   0x00cf92000000ffff      /* 0x10: flat 32-bit data */
gdt_desc:
        .word   gdt_desc - gdt - 1
        .long   gdt

        .org    510
        .word   0xaa55
