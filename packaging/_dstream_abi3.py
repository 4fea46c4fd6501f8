"""Puts this machine's abi3 extension packages on sys.path (run by _dstream_abi3.pth).

An abi3 extension file has one name for every interpreter and machine
(cryptography's _rust.abi3.so), so the zipapp keeps one copy per machine under
_abi3/<machine>/ and this picks the host's.
"""

import os
import sys

sys.path.append(os.path.join(os.path.dirname(os.path.abspath(__file__)), "_abi3", os.uname().machine))
