"""python3 -m bench.vm: the sched_ext proof in a VM (bench/vm/proof.py)."""

import sys

from bench.vm.proof import main

sys.exit(main())
