from services.judge.app import main

main()
