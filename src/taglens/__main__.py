from taglens.cli import main

main()
