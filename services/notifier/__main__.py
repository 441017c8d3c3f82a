from notifier.entrypoints.main import main

main()
