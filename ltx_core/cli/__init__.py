"""The parts of the command-line generator (`python -m ltx_core.generate`, the run itself):

flags.py     the options, their parsing into core Settings, UsageError
checks.py    every option's value checked before anything is read, and the sampling options against
             the release and the model's depth once the headers are read
models.py    model options → local files: headers checked, Hub references looked up and fetched, loading
inputs.py    the conditioning media (--image, --keyframe, --video, --extend) read and checked
console.py   the log on stderr and the sampling progress bar
"""
