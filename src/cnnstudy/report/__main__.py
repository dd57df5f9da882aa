import sys

from cnnstudy.report.command import main

main(sys.argv[1:])
