from collector.entrypoints.main import main

main()
