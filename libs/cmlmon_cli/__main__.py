from cmlmon_cli.main import main

main()
