// hog: a CPU busy loop (the load the probe competes with in bench/vm's proof).
int main(void) {
    volatile unsigned long x = 0;
    for (;;) x++;
}
