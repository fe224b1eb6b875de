from clearset.cli import main

main()
