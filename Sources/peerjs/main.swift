print("peerjs")
