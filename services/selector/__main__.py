from services.selector.app import main

main()
