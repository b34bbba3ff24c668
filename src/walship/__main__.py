from walship.cli import main

raise SystemExit(main())
