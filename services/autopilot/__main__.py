from autopilot.entrypoints.main import main

main()
