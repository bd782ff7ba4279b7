from eventfold.cli import main

raise SystemExit(main())
