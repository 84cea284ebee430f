from video_mm.cli import main

main()
