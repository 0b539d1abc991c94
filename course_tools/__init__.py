"""The course's machinery: building chapters from solutions, the sandboxed grader, the nbgrader
workflow, benchmarks and deployment sizing. Notebooks never import it; learners meet only
``utils``. One module per concern (the README's "For contributors" lists them).

(Not named ``course``: that is the folder ``python -m course_tools.nbgrader_course init`` makes
for the instructor's nbgrader course, and ``.gitignore`` keeps it out of the repository.)
"""
