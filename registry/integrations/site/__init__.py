"""The static HTML catalog (`registry site`): read a commit, render it, write the folder."""
