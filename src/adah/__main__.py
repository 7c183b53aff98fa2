from adah.cli import main

main()
