from taskgraph.cli import main

raise SystemExit(main())
