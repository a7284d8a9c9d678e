from matcher.cli import console_main

console_main()
