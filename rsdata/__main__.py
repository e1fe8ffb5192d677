from rsdata.cli import main

raise SystemExit(main())
