from liveavatar.cli import main

main()
