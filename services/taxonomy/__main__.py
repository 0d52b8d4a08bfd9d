from services.taxonomy.app import main

main()
