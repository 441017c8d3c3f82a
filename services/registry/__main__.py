from registry.entrypoints.main import main

main()
