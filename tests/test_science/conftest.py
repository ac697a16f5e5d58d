import os
import sys

# the independent reference computations (science_independent.py) live next to these tests
sys.path.insert(0, os.path.dirname(__file__))
