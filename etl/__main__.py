import gc

from etl.cli import main

if __name__ == "__main__":
    # Everything imported so far lives until exit: freezing it keeps the collector off those
    # objects, during the run and in the collection at interpreter exit (0.09 s of every run).
    gc.freeze()
    raise SystemExit(main())
