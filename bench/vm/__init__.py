"""The proof on a real sched_ext kernel (`make vm-proof`): operator -> Decision Maker ->
Gthulhu's scheduler, and the boost's effect, inside QEMU guests.

    layout      where the artefacts live (the cache) and what they are built from (pins)
    artefacts   build or reuse them, by calling the shared recipes (never a recipe of ours)
    guest_root  the guest's root: a Debian root + this tree's .deb + the builds, as one cpio
    qemu        boot one guest, retry an emulation oops, collect its report lines
    gthulhu_log what the scheduler's log says it boosted (pure)
    verdict     the functional verdict and the effect table (pure)
    proof       the whole run: `python3 -m bench.vm`
    guest/      what runs inside: init, the orchestrator, the gNB-like probe (C), the hog (C)
"""
