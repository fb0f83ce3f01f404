-- (being written by its owner)
return 0
