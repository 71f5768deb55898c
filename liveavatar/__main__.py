from liveavatar.cli import main

if __name__ == "__main__":   # multiprocessing children import this module too
    main()
